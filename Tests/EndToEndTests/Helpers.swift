import Foundation
import Kafka
import OrderCore
import Testing
import TestSupport

func expectOK(_ reply: JSON, _ action: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(reply["status"]?.string == "ok", "expected ok, got \(reply.text)", sourceLocation: sourceLocation)
    #expect(reply["action"]?.string == action, sourceLocation: sourceLocation)
}

func expectError(_ reply: JSON, _ code: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(reply["status"]?.string == "error", "expected error \(code), got \(reply.text)", sourceLocation: sourceLocation)
    #expect(reply["error"]?["code"]?.string == code, "expected \(code), got \(reply.text)", sourceLocation: sourceLocation)
    #expect(reply["error"]?["message"]?.string?.isEmpty == false, sourceLocation: sourceLocation)
}

func add(_ user: Int64, _ product: Int64, _ quantity: Int64, id: String? = nil) -> JSON {
    .object([
        ("request_id", .optional(id)), ("action", "add_item"), ("user_id", .int(user)), ("product_id", .int(product)),
        ("quantity", .int(quantity)),
    ])
}

func cartLines(_ reply: JSON) -> [(product: Int64, quantity: Int64, price: String)] {
    (reply["cart"]?["items"]?.array ?? []).map { ($0["product_id"]!.int!, $0["quantity"]!.int!, $0["unit_price"]!.string!) }
}

/// The service's metrics records seen so far (its reports, one per window), parsed, oldest first.
func metricsReports(_ system: TestSystem) -> [JSON] {
    guard let topic = system.topics.metricsTopic else { return [] }
    return system.records(on: topic).compactMap { try? JSON.parse($0.value ?? []) }
}

/// Requests counted by the metrics records seen so far, summed over their windows ("action/outcome" → count).
func metricsTotals(_ system: TestSystem) -> [String: Int64] {
    var totals: [String: Int64] = [:]
    for report in metricsReports(system) {
        guard case .object(let requests)? = report["requests"] else { continue }
        for (key, count) in requests { totals[key, default: 0] += count.int ?? 0 }
    }
    return totals
}

/// A JSON number (integer or decimal) as a Double; nil for anything else (null included).
func decimal(_ json: JSON?) -> Double? {
    switch json {
    case .int(let v)?: Double(v)
    case .number(let s)?: Double(s)
    default: nil
    }
}

/// Deduction results handled, whatever their outcome, in `metricsTotals`.
func deductionResults(_ totals: [String: Int64]) -> Int64 {
    totals.filter { $0.key.hasPrefix("deduction_result/") }.values.reduce(0, +)
}

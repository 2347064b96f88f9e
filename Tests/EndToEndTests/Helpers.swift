import Foundation
import Kafka
import OrderCore
import Testing
import TestSupport

/// Runs `body` against a fresh system and always stops it (and its processes) afterwards.
func withSystem(
    _ name: String, product: Bool = true, inventory: Bool = true, environment: [String: String] = [:],
    _ body: (TestSystem) async throws -> Void
) async throws {
    let system = try await TestSystem.start(name, product: product, inventory: inventory, environment: environment)
    do {
        try await body(system)
    } catch {
        await system.stop()
        throw error
    }
    await system.stop()
}

extension JSON {
    var string: String? { if case .string(let s) = self { s } else { nil } }
    var int: Int64? { if case .int(let v) = self { v } else { nil } }
    var array: [JSON]? { if case .array(let a) = self { a } else { nil } }
    var isNull: Bool { self == .null }
}

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

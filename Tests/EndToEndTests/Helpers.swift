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

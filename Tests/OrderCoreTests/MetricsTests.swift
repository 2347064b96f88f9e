import OrderCore
import Testing

@Suite("Metrics: action and outcome read from reply bytes", .timeLimit(.minutes(1)))
struct MetricsTests {
    @Test func actionAndOutcomeOfReplies() {
        let ok = Reply.ok(requestId: "r1", action: "add_item", body: [("cart", .null)]).bytes
        #expect(ServiceMetrics.action(ofReply: ok) == "add_item")
        #expect(ServiceMetrics.outcome(ofReply: ok) == "ok")
        let refused = Reply.error(requestId: nil, action: "create_order", ServiceError(.cartEmpty, "the cart is empty")).bytes
        #expect(ServiceMetrics.action(ofReply: refused) == "create_order")
        #expect(ServiceMetrics.outcome(ofReply: refused) == "cart_empty")
        #expect(ServiceMetrics.action(ofReply: Array(#"{"action":"drop_tables"}"#.utf8)) == "unknown")
        #expect(ServiceMetrics.action(ofReply: Array("not json".utf8)) == "malformed")
        #expect(ServiceMetrics.action(ofReply: []) == "malformed")
        #expect(ServiceMetrics.outcome(ofReply: Array(#"{"status":"error"}"#.utf8)) == "error")
    }
}

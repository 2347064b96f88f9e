import OrderCore
import Testing

@Suite("Metrics: action and outcome of a request, from its typed outcome", .timeLimit(.minutes(1)))
struct MetricsTests {
    @Test func actionAndOutcomeOfReplies() {
        let ok = RequestOutcome.ok(requestId: "r1", action: "add_item", body: [("cart", .null)])
        #expect(ok.metricsAction == "add_item")
        #expect(ok.metricsOutcome == "ok")
        #expect(ok.reply == Reply.ok(requestId: "r1", action: "add_item", body: [("cart", .null)]).bytes)
        let refused = RequestOutcome.error(requestId: nil, action: "create_order", ServiceError(.cartEmpty, "the cart is empty"))
        #expect(refused.metricsAction == "create_order")
        #expect(refused.metricsOutcome == "cart_empty")
        #expect(refused.reply == Reply.error(requestId: nil, action: "create_order", ServiceError(.cartEmpty, "the cart is empty")).bytes)
        let unknown = RequestOutcome.error(requestId: nil, action: "drop_tables", ServiceError(.unknownAction, "no"))
        #expect(unknown.metricsAction == "unknown")
        #expect(RequestOutcome.error(requestId: nil, action: nil, .invalid("not json")).metricsAction == "malformed")
    }

    /// A repeat is answered with the reply stored by an earlier delivery: its action and status
    /// are read back from it, and give the same labels as when it was first sent.
    @Test func aStoredReplyGivesTheLabelsItWasSentWith() {
        let replies = [
            RequestOutcome.ok(requestId: "r1", action: "add_item", body: [("cart", .null)]),
            RequestOutcome.ok(requestId: nil, action: "list_orders", body: [("orders", [])]),
            RequestOutcome.error(requestId: "r2", action: "create_order", ServiceError(.cartEmpty, "the cart is empty")),
            RequestOutcome.error(requestId: String(repeating: "\u{0}", count: 128), action: "get_order", ServiceError(.orderNotFound, "x")),
            RequestOutcome.error(requestId: "r\"code\":\"forbidden", action: "add_item", .invalid("bad")),
            RequestOutcome.error(requestId: nil, action: nil, .invalid("not json")),
        ]
        for original in replies {
            let stored = RequestOutcome(stored: original.reply)
            #expect(stored.metricsAction == original.metricsAction, "\(String(decoding: original.reply, as: UTF8.self))")
            #expect(stored.metricsOutcome == original.metricsOutcome, "\(String(decoding: original.reply, as: UTF8.self))")
            #expect(stored.reply == original.reply)
        }
        #expect(RequestOutcome(stored: Array("not json".utf8)).metricsAction == "malformed")
        #expect(RequestOutcome(stored: Array(#"{"status":"error"}"#.utf8)).metricsOutcome == "error")
        #expect(RequestOutcome(stored: []).metricsAction == "malformed")
    }
}

import Foundation
import Kafka
import OrderCore
import Testing
import TestSupport

extension EndToEndTests {
    /// The scenario over the real executables: each user has product A in the cart; then
    /// at once `create_order` (key = user id), `add_item` of product B (another key, so another
    /// lane) and a second `create_order` (a third key). Afterwards every acknowledged add is in the
    /// cart or in exactly one order, no line is ordered twice, and no existing product is reported
    /// missing.
    @Test("create_order raced by add_item and a second create_order on other keys: nothing lost, nothing doubled")
    func createOrderRacedOnOtherKeys() async throws {
        try await withSystem("race-keys") { system in
            let a = TestCatalog.uniqueProductId()
            let b = TestCatalog.uniqueProductId()
            try await TestCatalog.add(a, price: "1.00", stock: 1_000_000)
            try await TestCatalog.add(b, price: "2.00", stock: 1_000_000)
            let users = (0..<150).map { _ in TestCatalog.uniqueUserId() }

            func sendAll(_ requests: [(key: String, body: JSON)]) async throws -> [String: JSON] {
                var ids: [String: String] = [:]
                var batch: [KafkaOutgoingRecord] = []
                for (i, r) in requests.enumerated() {
                    let correlation = "race-\(UUID().uuidString)"
                    ids[correlation] = "\(i)"
                    let topic = r.body["action"]?.string == "create_order" ? "order_requests" : "cart_requests"
                    batch.append(KafkaOutgoingRecord(
                        topic: system.topics.name(topic), key: Array(r.key.utf8), value: r.body.bytes,
                        headers: [KafkaHeader("correlation-id", correlation)]))
                }
                _ = try await system.producer.sendAll(batch)
                var replies: [String: JSON] = [:]
                let deadline = ContinuousClock.now + .seconds(120)
                while replies.count < ids.count, ContinuousClock.now < deadline {
                    for rec in system.records(on: "cart_responses") + system.records(on: "order_responses") {
                        guard let c = rec.header("correlation-id")?.stringValue, ids[c] != nil, replies[c] == nil else { continue }
                        replies[c] = try JSON.parse(rec.value ?? [])
                    }
                    try await Task.sleep(for: .milliseconds(200))
                }
                #expect(replies.count == ids.count, "\(ids.count - replies.count) requests unanswered")
                return replies
            }

            let setup = try await sendAll(users.map { u in (String(u), add(u, a, 1, id: "setup-\(u)")) })
            #expect(setup.values.allSatisfy { $0["status"]?.string == "ok" })
            var race: [(key: String, body: JSON)] = []
            for u in users {
                race.append((String(u), ["request_id": .string("o1-\(u)"), "action": "create_order", "user_id": .int(u)]))
                race.append(("\(u)-other", add(u, b, 1, id: "b-\(u)")))
                race.append(("\(u)-third", ["request_id": .string("o2-\(u)"), "action": "create_order", "user_id": .int(u)]))
            }
            let replies = try await sendAll(race)
            var ackedB: Set<Int64> = []
            for r in replies.values {
                let code = r["error"]?["code"]?.string
                #expect(code == nil || code == "cart_empty", "unexpected reply: \(r.text)")
                if r["action"]?.string == "add_item", r["status"]?.string == "ok", let u = r["cart"]?["user_id"]?.int { ackedB.insert(u) }
            }
            for u in users {
                let cart = try await system.request("cart_requests", ["action": "get_cart", "user_id": .int(u)])
                let orders = try await system.request("order_requests", ["action": "list_orders", "user_id": .int(u)])
                var inCart: [Int64: Int64] = [:]
                for line in cart["cart"]?["items"]?.array ?? [] { inCart[line["product_id"]?.int ?? 0, default: 0] += line["quantity"]?.int ?? 0 }
                var ordered: [Int64: Int64] = [:]
                for order in orders["orders"]?.array ?? [] {
                    for line in order["items"]?.array ?? [] { ordered[line["product_id"]?.int ?? 0, default: 0] += line["quantity"]?.int ?? 0 }
                }
                #expect(inCart[a, default: 0] + ordered[a, default: 0] == 1, "user \(u): product A \(cart.text) \(orders.text)")
                let expectedB: Int64 = ackedB.contains(u) ? 1 : 0
                #expect(inCart[b, default: 0] + ordered[b, default: 0] == expectedB, "user \(u): product B \(cart.text) \(orders.text)")
            }
        }
    }
}

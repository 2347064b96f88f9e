import Foundation
import Kafka
import OrderCore
import Testing
import TestSupport

extension EndToEndTests {
    @Test("order lifecycle: cart_empty, create at current prices, cart emptied, deduction, confirmed, notifications, list and get")
    func orderLifecycle() async throws {
        try await withSystem("orders", environment: ["ORDER_SERVICE_METRICS_INTERVAL_MS": "1000"]) { system in
            let user = TestCatalog.uniqueUserId()
            let other = TestCatalog.uniqueUserId()
            let mug = TestCatalog.uniqueProductId()
            let pot = TestCatalog.uniqueProductId()
            try await TestCatalog.add(mug, name: "Mug", price: "19.99", stock: 10)
            try await TestCatalog.add(pot, name: "Teapot", price: "5.00", stock: 10)

            var r = try await system.request("order_requests", ["action": "create_order", "user_id": .int(user)])
            expectError(r, "cart_empty")

            _ = try await system.request("cart_requests", add(user, mug, 2))
            _ = try await system.request("cart_requests", add(user, pot, 1))
            // The price changes after the item was added: the order uses the current price.
            try await TestCatalog.add(mug, name: "Mug v2", price: "21.00", stock: 10)

            r = try await system.request("order_requests", ["request_id": "o-1", "action": "create_order", "user_id": .int(user)])
            expectOK(r, "create_order")
            let order = try #require(r["order"])
            let orderId = try #require(order["order_id"]?.int)
            #expect(order["status"]?.string == "pending")
            #expect(order["user_id"]?.int == user)
            #expect(order["total_price"]?.string == "47.00")
            #expect(order["items"]?.array?.first?["product_name"]?.string == "Mug v2")
            #expect(order["items"]?.array?.first?["unit_price"]?.string == "21.00")
            #expect(order["items"]?.array?.first?["line_total"]?.string == "42.00")
            #expect(order["items"]?.array?.first?["order_item_id"]?.int != nil)

            let cart = try await system.request("cart_requests", ["action": "get_cart", "user_id": .int(user)])
            #expect(cartLines(cart).isEmpty)

            // The deduction request went out keyed by order_id, with reply-to and correlation-id.
            let deduction = try await system.waitFor { $0.topic == system.topics.deductionRequests && $0.key == Array(String(orderId).utf8) }
            let dj = try JSON.parse(deduction.value!)
            #expect(dj["order_id"]?.int == orderId)
            #expect(dj["items"]?.array?.count == 2)
            #expect(deduction.header("reply-to")?.stringValue == system.topics.deductionResults)
            #expect(deduction.header("correlation-id")?.stringValue == dj["request_id"]?.string)

            // Notifications: pending, then confirmed (the reference inventory deducted).
            let confirmed = try await system.waitFor { r in
                r.topic == system.topics.notifications && (try? JSON.parse(r.value ?? []))?["status"]?.string == "confirmed"
                    && (try? JSON.parse(r.value ?? []))?["order_id"]?.int == orderId
            }
            #expect(confirmed.key == Array(String(user).utf8))
            let events = system.records(on: "order_notification").compactMap { try? JSON.parse($0.value ?? []) }.filter { $0["order_id"]?.int == orderId }
            #expect(events.compactMap { $0["status"]?.string } == ["pending", "confirmed"])
            #expect(events.allSatisfy { $0["event"]?.string == "order_status_changed" && $0["total_price"]?.string == "47.00" && $0["at"]?.string != nil })
            #expect(try await TestCatalog.stock(mug) == 8)
            #expect(try await TestCatalog.stock(pot) == 9)

            r = try await system.request("order_requests", ["action": "get_order", "user_id": .int(user), "order_id": .int(orderId)])
            expectOK(r, "get_order")
            #expect(r["order"]?["status"]?.string == "confirmed")
            r = try await system.request("order_requests", ["action": "get_order", "user_id": .int(other), "order_id": .int(orderId)])
            expectError(r, "order_not_found")
            r = try await system.request("order_requests", ["action": "get_order", "user_id": .int(user), "order_id": .int(orderId + 1_000_000)])
            expectError(r, "order_not_found")

            // A second order; list_orders is newest first.
            _ = try await system.request("cart_requests", add(user, pot, 1))
            r = try await system.request("order_requests", ["action": "create_order", "user_id": .int(user)])
            let second = try #require(r["order"]?["order_id"]?.int)
            r = try await system.request("order_requests", ["action": "list_orders", "user_id": .int(user)])
            expectOK(r, "list_orders")
            #expect(r["orders"]?.array?.compactMap { $0["order_id"]?.int } == [second, orderId])
            r = try await system.request("order_requests", ["action": "list_orders", "user_id": .int(other)])
            #expect(r["orders"]?.array?.isEmpty == true)

            // A repeated deduction result (the same request_id, a contradicting status) changes
            // nothing and emits nothing; one naming another request is dead-lettered and changes
            // nothing either. The metrics count every deduction result handled: the reference
            // inventory's two (one per order) and these two, so four means both were handled
            // (no sleep standing in for that).
            let deductionId = try #require(dj["request_id"]?.string)
            for requestId in [deductionId, "x"] {
                try await system.send(
                    "inventory_deduction_results",
                    value: JSON.object([("request_id", .string(requestId)), ("order_id", .int(orderId)), ("status", "insufficient")]).bytes,
                    key: String(orderId))
            }
            do {
                try await TestKafka.eventually("the two extra deduction results handled", timeout: .seconds(30)) {
                    deductionResults(metricsTotals(system)) >= 4
                }
            } catch {
                Issue.record("\(error); counted: \(metricsTotals(system))")
            }
            #expect(deductionResults(metricsTotals(system)) == 4, "\(metricsTotals(system))")
            r = try await system.request("order_requests", ["action": "get_order", "user_id": .int(user), "order_id": .int(orderId)])
            #expect(r["order"]?["status"]?.string == "confirmed")
            #expect(try await TestCatalog.stock(mug) == 8, "neither gives stock back")
            let ours = system.records(on: "order_notification").compactMap { try? JSON.parse($0.value ?? []) }
                .filter { $0["order_id"]?.int == orderId }
            #expect(ours.compactMap { $0["status"]?.string } == ["pending", "confirmed"], "no notification for either")
            let deadLetter = try await system.waitFor { $0.topic == system.topics.deadLetters }
            #expect(deadLetter.header("dlq-error")?.stringValue?.contains("another request_id") == true)
            let deadBodies = system.records(on: "order_service_dlq").compactMap { try? JSON.parse($0.value ?? []) }
            #expect(deadBodies.compactMap { $0["request_id"]?.string } == ["x"], "only the foreign result is a dead letter")
        }
    }

    @Test("insufficient_stock and product_not_found refuse the order and keep the cart")
    func orderRefusals() async throws {
        try await withSystem("refusals") { system in
            let user = TestCatalog.uniqueUserId()
            let scarce = TestCatalog.uniqueProductId()
            try await TestCatalog.add(scarce, price: "3.00", stock: 2)
            _ = try await system.request("cart_requests", add(user, scarce, 5))
            var r = try await system.request("order_requests", ["action": "create_order", "user_id": .int(user)])
            expectError(r, "insufficient_stock")
            let line = try #require(r["error"]?["items"]?.array?.first)
            #expect(line["product_id"]?.int == scarce)
            #expect(line["requested"]?.int == 5)
            #expect(line["available"]?.int == 2)
            r = try await system.request("cart_requests", ["action": "get_cart", "user_id": .int(user)])
            #expect(cartLines(r).map(\.quantity) == [5])

            // The product disappears from the catalog after it was added.
            try await TestDatabase.withClient { db in _ = try await db.query("DELETE FROM ref_products WHERE product_id = $1", [scarce]) }
            r = try await system.request("order_requests", ["action": "create_order", "user_id": .int(user)])
            expectError(r, "product_not_found")
            #expect(r["error"]?["product_ids"]?.array?.compactMap(\.int) == [scarce])
            r = try await system.request("order_requests", ["action": "list_orders", "user_id": .int(user)])
            #expect(r["orders"]?.array?.isEmpty == true)
        }
    }

    @Test("last-unit race: two orders for the last unit end one confirmed and one rejected")
    func lastUnitRace() async throws {
        try await withSystem("race") { system in
            let product = TestCatalog.uniqueProductId()
            try await TestCatalog.add(product, price: "9.00", stock: 1)
            let a = TestCatalog.uniqueUserId()
            let b = TestCatalog.uniqueUserId()
            _ = try await system.request("cart_requests", add(a, product, 1))
            _ = try await system.request("cart_requests", add(b, product, 1))
            async let ra = system.request("order_requests", ["action": "create_order", "user_id": .int(a)])
            async let rb = system.request("order_requests", ["action": "create_order", "user_id": .int(b)])
            let (oa, ob) = try await (ra, rb)
            // Usually both pass the availability check and the deduction decides; when one
            // deduction lands before the other's check, that check already sees no stock.
            let created = zip([a, b], [oa, ob]).filter { $0.1["status"]?.string == "ok" }
            for r in [oa, ob] where r["status"]?.string != "ok" { expectError(r, "insufficient_stock") }
            try #require(!created.isEmpty, "neither order was created: \(oa.text) \(ob.text)")
            var finals: [String] = []
            var ids: [Int64] = []
            for (user, reply) in created {
                expectOK(reply, "create_order")
                let id = try #require(reply["order"]?["order_id"]?.int)
                ids.append(id)
                let deadline = ContinuousClock.now + .seconds(20)
                while ContinuousClock.now < deadline {
                    let r = try await system.request("order_requests", ["action": "get_order", "user_id": .int(user), "order_id": .int(id)])
                    if let s = r["order"]?["status"]?.string, s != "pending" { finals.append(s); break }
                    try await Task.sleep(for: .milliseconds(200))
                }
            }
            #expect(finals.sorted() == (created.count == 2 ? ["confirmed", "rejected"] : ["confirmed"]))
            #expect(try await TestCatalog.stock(product) == 0)
            if created.count == 2 {
                let rejected = try await system.waitFor { r in
                    r.topic == system.topics.notifications && (try? JSON.parse(r.value ?? []))?["status"]?.string == "rejected"
                }
                let rejectedId = try JSON.parse(rejected.value ?? [])["order_id"]?.int
                #expect(rejectedId.map(ids.contains) == true)
            }
        }
    }

    @Test("upstream that never answers: upstream_timeout, nothing changed")
    func upstreamTimeout() async throws {
        try await withSystem("timeout", product: false, inventory: false, environment: ["ORDER_SERVICE_UPSTREAM_TIMEOUT_MS": "1000"]) { system in
            let user = TestCatalog.uniqueUserId()
            let product = TestCatalog.uniqueProductId()
            let started = ContinuousClock.now
            var r = try await system.request("cart_requests", add(user, product, 1, id: "t-1"))
            expectError(r, "upstream_timeout")
            // What this protects: the reply comes from the 1 s upstream timeout, not from waiting
            // on (the request's own timeout is 20 s); generous for a loaded machine.
            #expect(ContinuousClock.now - started < .seconds(15))
            r = try await system.request("cart_requests", ["action": "get_cart", "user_id": .int(user)])
            #expect(cartLines(r).isEmpty)
            #expect(r["cart"]?["cart_id"]?.isNull == true)
            // A transient failure is not remembered: once the upstream is back the same request_id succeeds.
            try await TestCatalog.add(product, price: "1.00")
            try system.startProcess("product-service")
            let deadline = ContinuousClock.now + .seconds(30)
            repeat {
                r = try await system.request("cart_requests", add(user, product, 1, id: "t-1"))
            } while r["status"]?.string != "ok" && ContinuousClock.now < deadline
            expectOK(r, "add_item")
            #expect(cartLines(r).map(\.quantity) == [1])
        }
    }
}

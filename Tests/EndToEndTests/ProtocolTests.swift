import Foundation
import Kafka
import OrderCore
import Testing
import TestSupport

extension EndToEndTests {
    @Test("headers: reply-to, kafka_replyTopic, invalid_reply_to, correlation ids, key, content-type")
    func headerRules() async throws {
        try await withSystem("headers") { system in
            let user = TestCatalog.uniqueUserId()
            let product = TestCatalog.uniqueProductId()
            try await TestCatalog.add(product, price: "2.50")
            let orderResponses = system.topics.name("order_responses")

            // reply-to naming another declared response topic is honoured.
            var rec = try await system.requestRecord(
                "cart_requests", value: add(user, product, 1).bytes, key: String(user),
                headers: [KafkaHeader("reply-to", orderResponses), KafkaHeader("kafka_correlationId", "spring-1")])
            #expect(rec.topic == orderResponses)
            #expect(rec.header("kafka_correlationId")?.stringValue == "spring-1")
            #expect(rec.header("content-type")?.stringValue == "application/json")
            #expect(rec.key == Array(String(user).utf8))

            rec = try await system.requestRecord(
                "cart_requests", value: JSON.object([("action", "get_cart"), ("user_id", .int(user))]).bytes, key: "custom-key",
                headers: [KafkaHeader("kafka_replyTopic", orderResponses)])
            #expect(rec.topic == orderResponses)
            #expect(rec.key == Array("custom-key".utf8))

            // Not a response topic (or a look-alike): invalid_reply_to on the default topic, no effect.
            for bad in [system.topics.cartRequests, orderResponses.uppercased(), " " + orderResponses, "elsewhere", "order_respons\u{0435}s"] {
                rec = try await system.requestRecord(
                    "cart_requests", value: add(user, product, 5, id: "bad-\(bad)").bytes, key: String(user),
                    headers: [KafkaHeader("reply-to", bad)])
                #expect(rec.topic == system.topics.name("cart_responses"))
                let reply = try JSON.parse(rec.value!)
                expectError(reply, "invalid_reply_to")
                #expect(reply["request_id"]?.string == "bad-\(bad)")
            }
            // Binary correlation ids are copied byte for byte.
            let binary: [UInt8] = [0x00, 0xFF, 0x10, 0x80]
            rec = try await system.requestRecord(
                "cart_requests", value: JSON.object([("action", "get_cart"), ("user_id", .int(user))]).bytes, key: String(user),
                headers: [KafkaHeader(key: "correlation-id", value: binary)])
            #expect(rec.header("correlation-id")?.value == binary)
            #expect(cartLines(try JSON.parse(rec.value!)).map(\.quantity) == [1])
        }
    }

    @Test("idempotency: a repeated request_id gets the same bytes and no second effect")
    func idempotentReplay() async throws {
        try await withSystem("idem") { system in
            let user = TestCatalog.uniqueUserId()
            let product = TestCatalog.uniqueProductId()
            try await TestCatalog.add(product, price: "1.25")
            let first = try await system.requestRecord("cart_requests", value: add(user, product, 3, id: "same").bytes, key: String(user))
            let second = try await system.requestRecord("cart_requests", value: add(user, product, 3, id: "same").bytes, key: String(user))
            #expect(first.value == second.value)
            let cart = try await system.request("cart_requests", ["action": "get_cart", "user_id": .int(user)])
            #expect(cartLines(cart).map(\.quantity) == [3])

            // Orders too: one order, the same reply.
            let o1 = try await system.requestRecord(
                "order_requests", value: JSON.object([("request_id", "ord"), ("action", "create_order"), ("user_id", .int(user))]).bytes, key: String(user))
            let o2 = try await system.requestRecord(
                "order_requests", value: JSON.object([("request_id", "ord"), ("action", "create_order"), ("user_id", .int(user))]).bytes, key: String(user))
            #expect(o1.value == o2.value)
            let list = try await system.request("order_requests", ["action": "list_orders", "user_id": .int(user)])
            #expect(list["orders"]?.array?.count == 1)
        }
    }

    @Test("malformed records: invalid_request with request_id null, a dead-letter copy; unknown_action; forbidden")
    func malformedRecords() async throws {
        try await withSystem("malformed") { system in
            let user = TestCatalog.uniqueUserId()
            let cases: [[UInt8]?] = [
                Array("not json".utf8), Array("[1,2]".utf8), [0xC3, 0x28, 0x7B], nil, Array(#"{"action":"get_cart","user_id":"42"}"#.utf8),
                Array(#"{"action":"add_item","user_id":1,"product_id":2,"quantity":1.5}"#.utf8), Array(#"{"user_id":1}"#.utf8),
            ]
            for (i, value) in cases.enumerated() {
                let rec = try await system.requestRecord("cart_requests", value: value, key: "k\(i)")
                let reply = try JSON.parse(rec.value!)
                expectError(reply, "invalid_request")
                #expect(reply["request_id"]?.isNull == true)
                #expect(rec.key == Array("k\(i)".utf8))
                let dlq = try await system.waitFor { $0.topic == system.topics.deadLetters && $0.key == Array("k\(i)".utf8) }
                #expect(dlq.value == value)
                #expect(dlq.header("dlq-source-topic")?.stringValue == system.topics.cartRequests)
                #expect(dlq.header("dlq-source-offset")?.stringValue != nil)
                #expect(dlq.header("dlq-source-partition")?.stringValue != nil)
                #expect(dlq.header("dlq-error")?.stringValue?.isEmpty == false)
            }
            var r = try await system.request("cart_requests", ["request_id": "u", "action": "fly", "user_id": .int(user)])
            expectError(r, "unknown_action")
            #expect(r["request_id"]?.string == "u")
            r = try await system.request("cart_requests", ["action": "list_carts"])
            expectError(r, "forbidden")
            r = try await system.request("cart_requests", ["action": "add_item", "user_id": .int(user), "product_id": 1, "quantity": 0])
            expectError(r, "invalid_request")
            r = try await system.request("order_requests", ["action": "get_cart", "user_id": .int(user)])
            expectError(r, "unknown_action")
            // Unknown extra fields are ignored.
            r = try await system.request("cart_requests", ["action": "get_cart", "user_id": .int(user), "extra": ["x": 1]])
            expectOK(r, "get_cart")
        }
    }

    @Test("admin list_carts pages by cart_id")
    func adminListCarts() async throws {
        try await withSystem("admin") { system in
            let product = TestCatalog.uniqueProductId()
            try await TestCatalog.add(product, price: "1.00")
            var mine: [Int64] = []
            for _ in 0..<3 {
                let u = TestCatalog.uniqueUserId()
                let r = try await system.request("cart_requests", add(u, product, 1))
                mine.append(r["cart"]!["cart_id"]!.int!)
            }
            var after: Int64? = mine[0] - 1
            var seen: [Int64] = []
            while let a = after {
                let r = try await system.request("admin_requests", ["action": "list_carts", "limit": 2, "after_cart_id": .int(a)])
                expectOK(r, "list_carts")
                let ids = r["carts"]?.array?.compactMap { $0["cart_id"]?.int } ?? []
                #expect(ids.count <= 2)
                #expect(ids == ids.sorted())
                seen += ids
                after = r["next_after_cart_id"]?.int
                if seen.count > 1_000 { break }
            }
            #expect(Set(mine).isSubset(of: Set(seen)))
            let page = try await system.request("admin_requests", ["action": "list_carts", "limit": 1, "after_cart_id": .int(mine[0] - 1)])
            #expect(page["carts"]?.array?.first?["items"]?.array?.count == 1)
            #expect(page["carts"]?.array?.first?["total_price"]?.string == "1.00")
            let bad = try await system.request("admin_requests", ["action": "list_carts", "limit": 0])
            expectError(bad, "invalid_request")
        }
    }

    @Test("ordering and load: a 50-request burst for one user applies in order; hundreds of users at once")
    func orderingAndLoad() async throws {
        try await withSystem("load") { system in
            let product = TestCatalog.uniqueProductId()
            try await TestCatalog.add(product, price: "0.10")
            let user = TestCatalog.uniqueUserId()
            _ = try await system.request("cart_requests", add(user, product, 1))
            // Fire 50 updates without waiting; each reply must show its own quantity (applied in order).
            var ids: [String] = []
            for q in 1...50 {
                let id = "burst-\(q)"
                ids.append(id)
                try await system.send(
                    "cart_requests",
                    value: JSON.object([("request_id", .string(id)), ("action", "update_item"), ("user_id", .int(user)), ("product_id", .int(product)), ("quantity", .int(Int64(q)))]).bytes,
                    key: String(user))
            }
            let cartResponses = system.topics.name("cart_responses")
            _ = try await system.waitFor(timeout: .seconds(30)) { r in
                r.topic == cartResponses && (try? JSON.parse(r.value ?? []))?["request_id"]?.string == "burst-50"
            }
            let replies = system.records(on: "cart_responses").compactMap { try? JSON.parse($0.value ?? []) }
                .filter { $0["request_id"]?.string?.hasPrefix("burst-") == true }
            #expect(replies.compactMap { $0["request_id"]?.string } == ids)
            #expect(replies.map { cartLines($0).first?.quantity ?? -1 } == Array(1...50))

            // 300 add_item requests from 100 users, all at once.
            let users = (0..<100).map { _ in TestCatalog.uniqueUserId() }
            for round in 0..<3 {
                for u in users {
                    try await system.send("cart_requests", value: add(u, product, 2, id: "many-\(u)-\(round)").bytes, key: String(u))
                }
            }
            let deadline = ContinuousClock.now + .seconds(60)
            var answered = 0
            while ContinuousClock.now < deadline {
                answered = system.records(on: "cart_responses").filter { r in
                    (try? JSON.parse(r.value ?? []))?["request_id"]?.string?.hasPrefix("many-") == true
                }.count
                if answered >= 300 { break }
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(answered == 300)
            for u in users.prefix(10) {
                let r = try await system.request("cart_requests", ["action": "get_cart", "user_id": .int(u)])
                #expect(cartLines(r).map(\.quantity) == [6])
            }
        }
    }

    /// Requests are in flight at SIGTERM: the service has asked the (fake) Product Service about
    /// them, which answers only 4 s after each question (room for a loaded machine to see them all
    /// unanswered first; the upstream timeout is raised above it). Draining means each is still
    /// answered (ok, with the item in the cart) before the service exits 0.
    @Test("SIGTERM with requests in flight: each is answered, then the service exits 0 promptly")
    func gracefulStop() async throws {
        try await withSystem("sigterm", product: false, inventory: false, environment: ["ORDER_SERVICE_UPSTREAM_TIMEOUT_MS": "30000"]) { system in
            let answerDelay: Duration = .seconds(4)
            let upstream = try FakeUpstream(system) { r in
                switch r.service {
                case .product:
                    let entries = r.productIds.map { String(decoding: productEntry($0), as: UTF8.self) }.joined(separator: ",")
                    return [FakeUpstream.Answer(#"{"request_id":\#(r.requestIdJSON),"products":[\#(entries)]}"#, delay: answerDelay)]
                case .inventory:
                    let items = r.productIds.map { #"{"product_id":\#($0),"available":1000}"# }.joined(separator: ",")
                    return [FakeUpstream.Answer(#"{"request_id":\#(r.requestIdJSON),"items":[\#(items)]}"#, delay: answerDelay)]
                }
            }
            do {
                try await stopWithRequestsInFlight(system, upstream, answerDelay: answerDelay)
            } catch {
                await upstream.stop()
                throw error
            }
            await upstream.stop()
        }
    }

    private func stopWithRequestsInFlight(_ system: TestSystem, _ upstream: FakeUpstream, answerDelay: Duration) async throws {
        let service = try #require(system.process("order-service"))
        // One request per user (so none waits queued behind another in its lane) and product.
        let work = (0..<5).map { i in (id: "drain-\(i)", user: TestCatalog.uniqueUserId(), product: TestCatalog.uniqueProductId()) }
        for w in work {
            try await system.send("cart_requests", value: add(w.user, w.product, 3, id: w.id).bytes, key: String(w.user))
        }
        let wanted = Set(work.map(\.product))
        try await TestKafka.eventually("the service to ask about every product", timeout: .seconds(30)) {
            Set(upstream.requests.filter { $0.service == .product }.flatMap(\.productIds)).isSuperset(of: wanted)
        }
        let cartResponses = system.topics.name("cart_responses")
        let ours = { @Sendable () -> [JSON] in
            system.records(on: cartResponses).compactMap { try? JSON.parse($0.value ?? []) }
                .filter { $0["request_id"]?.string?.hasPrefix("drain-") == true }
        }
        // In flight: asked upstream, not answered yet (the answers come 4 s after each question).
        try #require(ours().isEmpty, "answered before SIGTERM: \(ours().map(\.text))")
        service.signal(SIGTERM)
        let status = await service.waitForExit(timeout: .seconds(30))
        #expect(status == 0, "log:\n\(service.log.suffix(2000))")
        #expect(service.log.contains("draining"), "log:\n\(service.log.suffix(2000))")
        #expect(service.log.contains("stopped"))

        // Every request in flight at SIGTERM was answered, and as it should be.
        try await TestKafka.eventually("the replies of the drained requests", timeout: .seconds(20)) {
            ours().count >= work.count
        }
        let replies = ours()
        #expect(Set(replies.compactMap { $0["request_id"]?.string }) == Set(work.map(\.id)))
        #expect(replies.count == work.count, "one reply each: \(replies.map(\.text))")
        for w in work {
            let reply = try #require(replies.first { $0["request_id"]?.string == w.id })
            expectOK(reply, "add_item")
            #expect(cartLines(reply).map { [$0.product, $0.quantity] } == [[w.product, 3]], "\(reply.text)")
        }
        #expect(upstream.sendFailures.isEmpty, "\(upstream.sendFailures)")
    }
}

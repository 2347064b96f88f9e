import Foundation
import Kafka
import OrderCore
import Testing
import TestSupport

extension EndToEndTests {
    /// The channels whose records the order service writes (TestSystem listens to all of them).
    static let producedChannels = [
        "cart_responses", "order_responses", "admin_responses", "get_product_details", "inventory_check", "inventory_deduction",
        "order_notification", "order_service_dlq", "order_service_metrics",
    ]

    @Test("every record the service produces fits docs/asyncapi.yaml: value, headers and key, on every channel it writes")
    func everyProducedRecordFitsTheAsyncAPIDocument() async throws {
        let doc = try AsyncAPIDocument.load()
        let system = try await TestSystem.start("asyncapi", serviceEnvironment: ["ORDER_SERVICE_METRICS_INTERVAL_MS": "500"])
        do {
            try await runContractScenario(system)
            try await checkEveryRecord(system, doc)
        } catch {
            await system.stop()
            throw error
        }
        await system.stop()
    }

    /// Every action, ok and error replies of most codes, Spring and trace headers, a dead letter,
    /// an order through deduction to its confirmed notification.
    private func runContractScenario(_ system: TestSystem) async throws {
        let user = TestCatalog.uniqueUserId()
        let short = TestCatalog.uniqueUserId()
        let mug = TestCatalog.uniqueProductId()
        let rare = TestCatalog.uniqueProductId()
        try await TestCatalog.add(mug, name: "Mug", price: "19.99", stock: 100)
        try await TestCatalog.add(rare, name: "Rare", price: "0.00", stock: 1)
        let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        func item(_ action: String, _ u: Int64, _ p: Int64, _ q: Int64? = nil, id: String? = nil) -> JSON {
            var fields: [(String, JSON)] = [("request_id", .optional(id)), ("action", .string(action)), ("user_id", .int(u)), ("product_id", .int(p))]
            if let q { fields.append(("quantity", .int(q))) }
            return .object(fields)
        }

        // Cart actions (one with trace context and Spring's correlation header).
        var r = try await system.request(
            "cart_requests", item("add_item", user, mug, 2, id: "a-1"),
            headers: [KafkaHeader("traceparent", trace), KafkaHeader("tracestate", "x=1"), KafkaHeader("kafka_correlationId", "spring-1")])
        expectOK(r, "add_item")
        expectOK(try await system.request("cart_requests", ["action": "get_cart", "user_id": .int(user)]), "get_cart")
        expectOK(try await system.request("cart_requests", ["action": "get_cart", "user_id": .int(TestCatalog.uniqueUserId())]), "get_cart")
        expectOK(try await system.request("cart_requests", item("update_item", user, mug, 3, id: "a-2")), "update_item")
        expectOK(try await system.request("cart_requests", item("remove_item", user, mug, id: "a-3")), "remove_item")
        expectOK(try await system.request("cart_requests", item("add_item", user, mug, 2, id: "a-4")), "add_item")
        // A reply to another declared response topic.
        let routed = try await system.requestRecord(
            "cart_requests", value: JSON.object([("action", "get_cart"), ("user_id", .int(user))]).bytes, key: String(user),
            headers: [KafkaHeader("reply-to", system.topics.name("order_responses"))])
        #expect(routed.topic == system.topics.name("order_responses"))

        // Errors.
        expectError(try await system.request("cart_requests", item("add_item", user, TestCatalog.uniqueProductId(), 1)), "product_not_found")
        expectError(try await system.request("cart_requests", item("update_item", user, rare, 1)), "item_not_found")
        expectError(try await system.request("cart_requests", ["action": "checkout", "user_id": .int(user)]), "unknown_action")
        expectError(try await system.request("order_requests", item("add_item", user, mug, 1)), "unknown_action")
        expectError(try await system.request("cart_requests", ["action": "list_carts"]), "forbidden")
        expectError(try await system.request("cart_requests", ["action": "get_cart", "user_id": 0]), "invalid_request")
        expectError(
            try await system.request("cart_requests", ["action": "get_cart", "user_id": .int(user)], headers: [KafkaHeader("reply-to", "elsewhere")]),
            "invalid_reply_to")
        expectError(try await system.request("order_requests", ["action": "create_order", "user_id": .int(TestCatalog.uniqueUserId())]), "cart_empty")
        expectError(
            try await system.request("order_requests", ["action": "get_order", "user_id": .int(user), "order_id": .int(Int64.max)]),
            "order_not_found")
        _ = try await system.request("cart_requests", item("add_item", short, rare, 5))
        r = try await system.request("order_requests", ["action": "create_order", "user_id": .int(short)])
        expectError(r, "insufficient_stock")
        #expect(r["error"]?["items"]?.array?.count == 1)

        // Malformed records: answered invalid_request and dead-lettered (one without a key).
        let malformed = try await system.requestRecord("cart_requests", value: Array("not json".utf8), key: String(user))
        expectError(try JSON.parse(malformed.value ?? []), "invalid_request")
        let keyless = try await system.requestRecord("cart_requests", value: Array(#"{"action":7}"#.utf8))
        #expect(keyless.key == nil)
        _ = try await system.waitFor { $0.topic == system.topics.deadLetters && $0.key == Array(String(user).utf8) }
        _ = try await system.waitFor { $0.topic == system.topics.deadLetters && $0.key == nil }

        // An order: pending reply, deduction request, pending then confirmed notifications.
        r = try await system.request("order_requests", ["request_id": "o-1", "action": "create_order", "user_id": .int(user)], headers: [KafkaHeader("traceparent", trace)])
        expectOK(r, "create_order")
        let orderId = try #require(r["order"]?["order_id"]?.int)
        _ = try await system.waitFor(timeout: .seconds(30)) { rec in
            rec.topic == system.topics.notifications && (try? JSON.parse(rec.value ?? []))?["event_id"]?.string == "order-\(orderId)-confirmed"
        }
        r = try await system.request("order_requests", ["action": "list_orders", "user_id": .int(user), "limit": 1])
        expectOK(r, "list_orders")
        r = try await system.request("order_requests", ["action": "list_orders", "user_id": .int(user), "limit": 5, "before_order_id": .int(orderId)])
        expectOK(r, "list_orders")
        expectOK(try await system.request("order_requests", ["action": "get_order", "user_id": .int(user), "order_id": .int(orderId)]), "get_order")

        // Admin: no key, paged.
        let carts = try await system.requestRecord("admin_requests", value: JSON.object([("action", "list_carts"), ("limit", 2)]).bytes)
        expectOK(try JSON.parse(carts.value ?? []), "list_carts")

        // At least one metrics record, then let stragglers (outbox relays, metrics) arrive.
        _ = try await system.waitFor(timeout: .seconds(10)) { $0.topic == system.topics.metricsTopic }
        try await Task.sleep(for: .seconds(1))
    }

    private func checkEveryRecord(_ system: TestSystem, _ doc: AsyncAPIDocument) async throws {
        var matched: [String: Set<String>] = [:]
        var errorCodes = Set<String>()
        var checked = 0
        for channel in Self.producedChannels {
            let records = system.records(on: channel)
            #expect(!records.isEmpty, "the scenario produced nothing on \(channel)")
            let messages = doc.messages(ofChannel: channel)
            for record in records {
                checked += 1
                var failures: [String] = []
                var fit: String?
                for m in messages {
                    let p = doc.problems(key: record.key, value: record.value, headers: record.headers.map { ($0.key, $0.value) }, message: m)
                    if p.isEmpty { fit = m.id; break }
                    failures += p.map { "[\(m.id)] \($0)" }
                }
                guard let fit else {
                    let value = String(decoding: (record.value ?? []).prefix(600), as: UTF8.self)
                    let headers = record.headers.map { "\($0.key)=\($0.stringValue ?? "\($0.value ?? [])")" }.joined(separator: ", ")
                    Issue.record("""
                        a record on \(channel) fits no message of the document
                        key: \(record.key.map { String(decoding: $0, as: UTF8.self) } ?? "nil")
                        headers: \(headers)
                        value: \(value)
                        \(failures.joined(separator: "\n"))
                        """)
                    continue
                }
                matched[channel, default: []].insert(fit)
                if fit == "error", let code = (try? JSON.parse(record.value ?? []))?["error"]?["code"]?.string { errorCodes.insert(code) }
            }
        }
        #expect(checked > 40)
        // The scenario reached every reply message and the error codes it provokes.
        let replies = matched["cart_responses", default: []].union(matched["order_responses", default: []]).union(matched["admin_responses", default: []])
        #expect(replies == Set(doc.messages(ofChannel: "cart_responses").map(\.id)), "reply messages seen: \(replies.sorted())")
        #expect(errorCodes.isSuperset(of: [
            "invalid_request", "unknown_action", "invalid_reply_to", "forbidden", "product_not_found", "item_not_found", "cart_empty",
            "insufficient_stock", "order_not_found",
        ]), "error codes seen: \(errorCodes.sorted())")
        let statuses = system.records(on: "order_notification").compactMap { try? JSON.parse($0.value ?? []) }.compactMap { $0["status"]?.string }
        #expect(Set(statuses).isSuperset(of: ["pending", "confirmed"]))
    }
}

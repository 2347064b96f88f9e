import Foundation
import Kafka
import OrderCore
import Testing
import TestSupport

extension EndToEndTests {
    /// An allow-listed reply-to topic that does not exist is found before any effect: the request
    /// is answered `invalid_reply_to` on the default topic, nothing changes, and the partition
    /// goes on. One that exists gets the reply (and the effect). An allow-list that would let
    /// clients write to the service's own request topics is refused at start.
    @Test("reply-to: a missing allow-listed topic is invalid_reply_to before any effect; a dangerous allow-list is refused at start")
    func replyToTopicsThatCannotBeWritten() async throws {
        let allowPrefix = "e2e-client-\(UUID().uuidString.prefix(8).lowercased())-"
        let system = try await TestSystem.start("replyto", serviceEnvironment: ["ORDER_SERVICE_REPLY_TO_ALLOW": "\(allowPrefix)*"])
        do {
            let user = TestCatalog.uniqueUserId()
            let product = TestCatalog.uniqueProductId()
            try await TestCatalog.add(product, price: "1.50")
            let cartResponses = system.topics.name("cart_responses")

            // Missing: answered on the default topic, nothing added.
            var rec = try await system.requestRecord(
                "cart_requests", value: add(user, product, 2, id: "missing-1").bytes, key: String(user),
                headers: [KafkaHeader("reply-to", "\(allowPrefix)missing")])
            #expect(rec.topic == cartResponses)
            var reply = try JSON.parse(rec.value ?? [])
            expectError(reply, "invalid_reply_to")
            #expect(reply["request_id"]?.string == "missing-1")
            var cart = try await system.request("cart_requests", ["action": "get_cart", "user_id": .int(user)])
            #expect(cartLines(cart).isEmpty, "nothing was changed: \(cart.text)")

            // Exists: the reply goes there (not to the default topic) and the effect is applied.
            let existing = "\(allowPrefix)inbox"
            try await TestKafka.createTopic(existing, partitions: 1)
            // The service reads the cluster's topic list at most every 250 ms (flood protection):
            // a topic this new may still count as missing.
            try await Task.sleep(for: .milliseconds(600))
            let correlation = UUID().uuidString
            try await system.send(
                "cart_requests", value: add(user, product, 3, id: "exists-1").bytes, key: String(user),
                headers: [KafkaHeader("reply-to", existing), KafkaHeader("correlation-id", correlation)])
            try await TestKafka.eventually("the add with an existing reply-to topic applied", timeout: .seconds(20)) {
                let c = try await system.request("cart_requests", ["action": "get_cart", "user_id": .int(user)])
                return cartLines(c).map(\.quantity) == [3]
            }
            #expect(!system.records(on: "cart_responses").contains { $0.header("correlation-id")?.stringValue == correlation })

            // The same request_id repeated with the missing topic again: still refused, still no effect.
            rec = try await system.requestRecord(
                "cart_requests", value: add(user, product, 2, id: "missing-1").bytes, key: String(user),
                headers: [KafkaHeader("reply-to", "\(allowPrefix)missing")])
            reply = try JSON.parse(rec.value ?? [])
            expectError(reply, "invalid_reply_to")
            cart = try await system.request("cart_requests", ["action": "get_cart", "user_id": .int(user)])
            #expect(cartLines(cart).map(\.quantity) == [3])

            // An allow-list matching the service's own request topic: refused at start, with a clear message.
            let refused = try system.startProcess(
                "order-service", as: "order-service-dangerous",
                environment: ["ORDER_SERVICE_REPLY_TO_ALLOW": "\(system.prefix)_cart*", "ORDER_SERVICE_HEALTH_FILE": ""])
            let status = await refused.waitForExit(timeout: .seconds(60))
            if status == nil { refused.signal(SIGKILL) }
            #expect(status != nil && status != 0, "a dangerous allow-list must stop the service")
            #expect(refused.log.contains("ORDER_SERVICE_REPLY_TO_ALLOW"), "\(refused.log.suffix(2000))")
            #expect(refused.log.contains(system.topics.cartRequests))
        } catch {
            await system.stop()
            throw error
        }
        await system.stop()
    }
}

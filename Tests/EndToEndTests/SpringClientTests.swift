import Foundation
import Kafka
import OrderCore
import Testing
import TestSupport

extension EndToEndTests {
    /// The service driven exactly as Spring Kafka's ReplyingKafkaTemplate drives it when its reply
    /// container listens on assigned partitions: `kafka_replyTopic` (UTF-8 bytes),
    /// `kafka_replyPartition` (4-byte big-endian int) and `kafka_correlationId` (16 random bytes).
    /// The reply lands on that partition with the correlation id byte for byte; an invalid
    /// partition is refused like an invalid reply-to, with nothing changed. Dead letters carry
    /// Spring's `kafka_dlt-*` headers; notifications carry CloudEvents headers.
    @Test("Spring request/reply: kafka_replyPartition honoured or refused; Spring dead-letter and CloudEvents headers")
    func springClient() async throws {
        try await withSystem("spring") { system in
            let user = TestCatalog.uniqueUserId()
            let product = TestCatalog.uniqueProductId()
            try await TestCatalog.add(product, price: "4.00")
            let replyTopic = system.topics.name("cart_responses")
            func springHeaders(partition: [UInt8]) -> ([KafkaHeader], [UInt8]) {
                let correlation = (0..<16).map { _ in UInt8.random(in: 0...255) }
                return ([
                    KafkaHeader(key: "kafka_replyTopic", value: Array(replyTopic.utf8)),
                    KafkaHeader(key: "kafka_replyPartition", value: partition),
                    KafkaHeader(key: "kafka_correlationId", value: correlation),
                ], correlation)
            }
            func reply(to correlation: [UInt8]) async throws -> KafkaRecord {
                try await system.waitFor(timeout: .seconds(20)) { $0.header("kafka_correlationId")?.value == correlation }
            }
            // Partition 6 of cart_responses (8 partitions), whatever the key hashes to.
            for partition: Int32 in [6, 0] {
                let (headers, correlation) = springHeaders(partition: ReplyRouting.bigEndian(UInt32(partition)))
                try await system.send("cart_requests", value: add(user, product, 1, id: "spring-\(partition)").bytes, key: String(user), headers: headers)
                let r = try await reply(to: correlation)
                #expect(r.topic == replyTopic)
                #expect(r.partition == partition)
                expectOK(try JSON.parse(r.value ?? []), "add_item")
            }
            // Invalid: beyond the topic's partitions, negative, wrong length. Nothing changes.
            for bad: [UInt8] in [ReplyRouting.bigEndian(UInt32(8)), ReplyRouting.bigEndian(UInt32(bitPattern: -1)), [0, 6]] {
                let (headers, correlation) = springHeaders(partition: bad)
                try await system.send("cart_requests", value: add(user, product, 5, id: "spring-bad-\(bad)").bytes, key: String(user), headers: headers)
                let r = try await reply(to: correlation)
                #expect(r.topic == replyTopic)
                expectError(try JSON.parse(r.value ?? []), "invalid_reply_to")
            }
            let cart = try await system.request("cart_requests", ["action": "get_cart", "user_id": .int(user)])
            #expect(cartLines(cart).map(\.quantity) == [2], "only the two valid requests took effect: \(cart.text)")

            // A malformed record's dead letter, as Spring's DeadLetterPublishingRecoverer writes it.
            let marker = "spring-dlt-\(UUID().uuidString)"
            try await system.send("cart_requests", value: Array("{not json \(marker)".utf8), key: "k")
            let dead = try await system.waitFor { $0.topic == system.topics.deadLetters && $0.value.map { String(decoding: $0, as: UTF8.self).contains(marker) } == true }
            #expect(dead.header("kafka_dlt-original-topic")?.stringValue == system.topics.cartRequests)
            #expect(dead.header("kafka_dlt-original-partition")?.value?.count == 4)
            #expect(dead.header("kafka_dlt-original-offset")?.value?.count == 8)
            #expect(dead.header("kafka_dlt-original-timestamp")?.value?.count == 8)
            #expect(dead.header("kafka_dlt-original-consumer-group")?.stringValue == system.groupId)
            #expect(dead.header("kafka_dlt-exception-fqcn")?.stringValue == "order_service.InvalidRequest")
            #expect(dead.header("kafka_dlt-exception-message")?.stringValue?.hasPrefix("the value is not valid JSON") == true)

            // Notifications are CloudEvents (binary mode) with a stable id.
            let order = try await system.request("order_requests", ["action": "create_order", "user_id": .int(user)])
            let orderId = try #require(order["order"]?["order_id"]?.int)
            let pending = try await system.waitFor {
                $0.topic == system.topics.notifications && $0.header("ce_id")?.stringValue == "order-\(orderId)-pending"
            }
            #expect(pending.header("ce_specversion")?.stringValue == "1.0")
            #expect(pending.header("ce_type")?.stringValue == OutgoingMessages.notificationEventType)
            #expect(pending.header("ce_source")?.stringValue == OutgoingMessages.defaultEventSource)
            #expect(pending.header("ce_subject")?.stringValue == String(orderId))
            #expect(pending.header("ce_time")?.stringValue == (try JSON.parse(pending.value ?? []))["at"]?.string)
        }
    }
}

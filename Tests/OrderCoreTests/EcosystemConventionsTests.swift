import Kafka
import Testing

@testable import OrderCore

/// Spring Kafka's reply partition and dead-letter headers, CloudEvents on notifications: the
/// byte formats other ecosystems read.
@Suite("Ecosystem conventions (Spring, CloudEvents)")
struct EcosystemConventionsTests {
    let topics = Fixture.topics()
    var routing: ReplyRouting { ReplyRouting(topics: topics, groupId: "order-service") }

    func record(_ headers: [KafkaHeader]) -> KafkaRecord { Fixture.record(headers: headers) }

    @Test func springReplyPartitionIsAFourByteBigEndianInt() {
        #expect(routing.replyPartition(for: record([])) == .any)
        #expect(routing.replyPartition(for: record([KafkaHeader(key: "kafka_replyPartition", value: [0, 0, 0, 5])])) == .partition(5))
        #expect(routing.replyPartition(for: record([KafkaHeader(key: "kafka_replyPartition", value: [0, 0, 1, 2])])) == .partition(258))
        for bad: [UInt8]? in [[0, 0, 5], [0, 0, 0, 0, 5], [], nil, [0xFF, 0xFF, 0xFF, 0xFF], [0x80, 0, 0, 0]] {
            #expect(routing.replyPartition(for: record([KafkaHeader(key: "kafka_replyPartition", value: bad)])) == .invalid, "\(String(describing: bad))")
        }
    }

    @Test func aReplyGoesToTheAskedPartition() {
        let r = routing.reply(to: record([]), topic: "cart_responses", value: [], partition: 3)
        #expect(r.partition == 3)
        #expect(routing.reply(to: record([]), topic: "cart_responses", value: []).partition == nil)
    }

    @Test func deadLettersCarrySpringsHeadersInSpringsByteFormats() {
        let source = KafkaRecord(
            topic: "cart_requests", partition: 7, offset: 0x0102_0304_0506, key: nil, value: Array("x".utf8), headers: [],
            timestampMs: 1_700_000_000_123, timestampType: .createTime)
        let copy = routing.deadLetter(source, error: "the value is not valid JSON", kind: .invalidRequest)
        func header(_ name: String) -> [UInt8]? { copy.headers.first { $0.key == name }?.value }
        #expect(header("kafka_dlt-original-topic") == Array("cart_requests".utf8))
        #expect(header("kafka_dlt-original-partition") == [0, 0, 0, 7])
        #expect(header("kafka_dlt-original-offset") == [0, 0, 1, 2, 3, 4, 5, 6])
        #expect(header("kafka_dlt-original-timestamp") == ReplyRouting.bigEndian(UInt64(1_700_000_000_123)))
        #expect(header("kafka_dlt-original-timestamp-type") == Array("CreateTime".utf8))
        #expect(header("kafka_dlt-original-consumer-group") == Array("order-service".utf8))
        #expect(header("kafka_dlt-exception-fqcn") == Array("order_service.InvalidRequest".utf8))
        #expect(header("kafka_dlt-exception-message") == Array("the value is not valid JSON".utf8))
        #expect(header("kafka_deliveryAttempt") == [0, 0, 0, 1])
        // The project's own headers stay.
        #expect(header("dlq-source-topic") == Array("cart_requests".utf8))
        #expect(header("dlq-source-offset") == Array(String(0x0102_0304_0506).utf8))
    }

    @Test func notificationsAreCloudEventsInBinaryMode() throws {
        let event = OutgoingMessages.notification(
            order: 9, user: 42, status: .confirmed, total: .zero, at: "2026-11-25T10:00:00.123Z", topics: topics, source: "/shop/orders")
        func header(_ name: String) -> String? { event.record.headers.first { $0.key == name }?.stringValue }
        #expect(header("ce_specversion") == "1.0")
        #expect(header("ce_id") == "order-9-confirmed")
        #expect(header("ce_type") == OutgoingMessages.notificationEventType)
        #expect(header("ce_source") == "/shop/orders")
        #expect(header("ce_time") == "2026-11-25T10:00:00.123Z")
        #expect(header("ce_subject") == "9")
        #expect(header("content-type") == "application/json")
        // The value is the event data, as before, with the same id.
        let body = try JSON.parse(event.record.value ?? [])
        #expect(body["event_id"] == .string("order-9-confirmed"))
        #expect(body["status"] == .string("confirmed"))
        // Sent again (after a crash): the same id.
        let again = OutgoingMessages.notification(order: 9, user: 42, status: .confirmed, total: .zero, at: "later", topics: topics)
        #expect(again.record.headers.first { $0.key == "ce_id" }?.stringValue == "order-9-confirmed")
    }
}

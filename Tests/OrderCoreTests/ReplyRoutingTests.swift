import Kafka
import Testing

@testable import OrderCore

@Suite("ReplyRouting", .timeLimit(.minutes(1)))
struct ReplyRoutingTests {
    let topics = Fixture.topics()

    func record(topic: String = "cart_requests", _ headers: [KafkaHeader]) -> KafkaRecord {
        Fixture.record(topic: topic, headers: headers)
    }

    func target(_ headers: [KafkaHeader], topic: String = "cart_requests", allow: [String] = []) -> ReplyRouting.Target {
        ReplyRouting(topics: topics, allowList: allow).target(for: record(topic: topic, headers))
    }

    // MARK: Default topics

    @Test(arguments: [("cart_requests", "cart_responses"), ("order_requests", "order_responses"), ("admin_requests", "admin_responses")])
    func defaultTopicPerRequestTopic(_ request: String, _ response: String) {
        #expect(target([], topic: request) == .topic(response))
    }

    @Test func defaultTopicsFollowRenamedTopics() {
        let renamed = Fixture.topics(names: [
            "cart_requests": "shop.cart.in", "cart_responses": "shop.cart.out", "order_responses": "shop.order.out",
        ])
        let routing = ReplyRouting(topics: renamed)
        #expect(routing.target(for: record(topic: "shop.cart.in", [])) == .topic("shop.cart.out"))
        #expect(routing.target(for: record(topic: "order_requests", [])) == .topic("shop.order.out"))
        // The old names are no longer request topics: fall back to the (renamed) cart response topic.
        #expect(routing.target(for: record(topic: "cart_requests", [])) == .topic("shop.cart.out"))
        #expect(routing.target(for: record(topic: "shop.cart.in", [KafkaHeader("reply-to", "cart_responses")]))
            == .rejected(defaultTopic: "shop.cart.out"))
        #expect(routing.target(for: record(topic: "shop.cart.in", [KafkaHeader("reply-to", "shop.order.out")]))
            == .topic("shop.order.out"))
    }

    @Test func unknownSourceTopicFallsBackToCartResponses() {
        #expect(target([], topic: "something_else") == .topic("cart_responses"))
        #expect(target([], topic: "cart_responses") == .topic("cart_responses"))
    }

    // MARK: reply-to / kafka_replyTopic

    @Test(arguments: ["reply-to", "kafka_replyTopic"])
    func anyResponseTopicIsHonoured(_ header: String) {
        #expect(target([KafkaHeader(header, "order_responses")]) == .topic("order_responses"))
        #expect(target([KafkaHeader(header, "admin_responses")], topic: "order_requests") == .topic("admin_responses"))
        #expect(target([KafkaHeader(header, "cart_responses")]) == .topic("cart_responses"))
    }

    @Test(arguments: [
        "cart_requests", "order_requests", "admin_requests", "order_service_dlq", "product_details", "get_product_details",
        "inventory_deduction", "inventory_deduction_results", "order_notification", "__consumer_offsets", "anything",
    ])
    func nonResponseTopicsAreRejectedUnlessAllowListed(_ topic: String) {
        #expect(target([KafkaHeader("reply-to", topic)]) == .rejected(defaultTopic: "cart_responses"))
        #expect(target([KafkaHeader("kafka_replyTopic", topic)], topic: "order_requests") == .rejected(defaultTopic: "order_responses"))
        #expect(target([KafkaHeader("reply-to", topic)], allow: [topic]) == .topic(topic))
    }

    @Test func allowListExactEntries() {
        let allow = ["client.replies", "other"]
        #expect(target([KafkaHeader("reply-to", "client.replies")], allow: allow) == .topic("client.replies"))
        #expect(target([KafkaHeader("reply-to", "other")], allow: allow) == .topic("other"))
        #expect(target([KafkaHeader("reply-to", "client.replies2")], allow: allow) == .rejected(defaultTopic: "cart_responses"))
        #expect(target([KafkaHeader("reply-to", "client.replie")], allow: allow) == .rejected(defaultTopic: "cart_responses"))
        #expect(target([KafkaHeader("reply-to", "Client.replies")], allow: allow) == .rejected(defaultTopic: "cart_responses"))
        // No wildcard semantics for entries without the trailing '*'.
        #expect(target([KafkaHeader("reply-to", "client*")], allow: ["client*x"]) == .rejected(defaultTopic: "cart_responses"))
    }

    @Test func allowListPrefixEntries() {
        let allow = ["client-*", "tenant.a.*"]
        #expect(target([KafkaHeader("reply-to", "client-1")], allow: allow) == .topic("client-1"))
        #expect(target([KafkaHeader("reply-to", "client-abc.replies_2")], allow: allow) == .topic("client-abc.replies_2"))
        #expect(target([KafkaHeader("reply-to", "tenant.a.x")], allow: allow) == .topic("tenant.a.x"))
        for rejected in ["client-", "client", "clientx", "Client-1", "tenant.b.x", "tenant.a.", "xclient-1", "client-*", "client-\u{0441}", "client- x", "client-x\n"] {
            #expect(target([KafkaHeader("reply-to", rejected)], allow: allow) == .rejected(defaultTopic: "cart_responses"), "\(rejected)")
        }
    }

    @Test(arguments: [
        "Cart_Responses", "CART_RESPONSES", " cart_responses", "cart_responses ", "\tcart_responses", "cart_responses\n",
        "cart_responses\r\n", "cart_responses\u{0}", "\u{0441}art_responses",  // Cyrillic es
        "cart_respon\u{0455}es",  // Cyrillic dze
        "cart\u{FF3F}responses",  // fullwidth low line
        "cart_responses\u{200B}",  // zero-width space
        "c\u{0301}art_responses", "", "cart_responses,order_responses", "cart_responses/x", "../cart_responses",
    ])
    func bypassAttemptsAreRejected(_ value: String) {
        let allow = ["client-*", "exact.topic"]
        #expect(target([KafkaHeader("reply-to", value)], allow: allow) == .rejected(defaultTopic: "cart_responses"))
        #expect(target([KafkaHeader("kafka_replyTopic", value)], allow: allow) == .rejected(defaultTopic: "cart_responses"))
    }

    @Test func invalidUTF8AndNullHeaderValuesAreRejected() {
        let bad: [[UInt8]?] = [
            Array("cart_responses".utf8) + [0xFF], [0xC3, 0x28], [0x63] + [0xC0, 0xAF], [0xED, 0xA0, 0x80], nil, [],
        ]
        for value in bad {
            #expect(target([KafkaHeader(key: "reply-to", value: value)]) == .rejected(defaultTopic: "cart_responses"), "\(String(describing: value))")
            #expect(target([KafkaHeader(key: "kafka_replyTopic", value: value)], topic: "admin_requests")
                == .rejected(defaultTopic: "admin_responses"))
        }
    }

    @Test func topicNamesLongerThanKafkaAllowsAreRejected() {
        let ok = "client-" + String(repeating: "a", count: 249 - 7)
        let tooLong = ok + "a"
        #expect(target([KafkaHeader("reply-to", ok)], allow: ["client-*"]) == .topic(ok))
        #expect(target([KafkaHeader("reply-to", tooLong)], allow: ["client-*"]) == .rejected(defaultTopic: "cart_responses"))
    }

    @Test func replyToWinsOverKafkaReplyTopic() {
        #expect(target([KafkaHeader("kafka_replyTopic", "admin_responses"), KafkaHeader("reply-to", "order_responses")])
            == .topic("order_responses"))
        // A bad reply-to is not rescued by a good kafka_replyTopic.
        #expect(target([KafkaHeader("reply-to", "evil"), KafkaHeader("kafka_replyTopic", "order_responses")])
            == .rejected(defaultTopic: "cart_responses"))
        #expect(target([KafkaHeader(key: "reply-to", value: nil), KafkaHeader("kafka_replyTopic", "order_responses")])
            == .rejected(defaultTopic: "cart_responses"))
    }

    @Test func theLastOfRepeatedHeadersDecides() {
        #expect(target([KafkaHeader("reply-to", "evil"), KafkaHeader("reply-to", "order_responses")]) == .topic("order_responses"))
        #expect(target([KafkaHeader("reply-to", "order_responses"), KafkaHeader("reply-to", "evil")])
            == .rejected(defaultTopic: "cart_responses"))
    }

    @Test func headerNamesAreCaseSensitive() {
        #expect(target([KafkaHeader("Reply-To", "evil")]) == .topic("cart_responses"))
        #expect(target([KafkaHeader("kafka_replytopic", "evil")]) == .topic("cart_responses"))
    }

    // MARK: Reply records

    @Test func replyCopiesCorrelationHeadersByteForByteAndSetsContentType() {
        let routing = ReplyRouting(topics: topics)
        let weird: [UInt8] = [0xFF, 0x00, 0x80, 0x41, 0xC3]
        let request = Fixture.record(key: [0x00, 0xFF, 0x31], headers: [
            KafkaHeader(key: "correlation-id", value: weird),
            KafkaHeader("reply-to", "order_responses"),
            KafkaHeader("content-type", "text/plain"),
            KafkaHeader("x-custom", "1"),
            KafkaHeader(key: "kafka_correlationId", value: [0x01, 0x02, 0xFE]),
            KafkaHeader("traceparent", "00-abc-def-01"),
            KafkaHeader("tracestate", "k=v"),
            KafkaHeader("kafka_replyTopic", "x"),
        ])
        let value = Array(#"{"status":"ok"}"#.utf8)
        let reply = routing.reply(to: request, topic: "order_responses", value: value)
        #expect(reply.topic == "order_responses")
        #expect(reply.partition == nil)
        #expect(reply.key == [0x00, 0xFF, 0x31])
        #expect(reply.value == value)
        #expect(reply.headers == [
            KafkaHeader("content-type", "application/json"),
            KafkaHeader(key: "correlation-id", value: weird),
            KafkaHeader(key: "kafka_correlationId", value: [0x01, 0x02, 0xFE]),
            KafkaHeader("traceparent", "00-abc-def-01"),
            KafkaHeader("tracestate", "k=v"),
        ])
    }

    @Test func replyKeepsANilKeyAndNullOrEmptyCorrelationIds() {
        let routing = ReplyRouting(topics: topics)
        let request = Fixture.record(key: nil, headers: [
            KafkaHeader(key: "correlation-id", value: nil), KafkaHeader(key: "kafka_correlationId", value: []),
        ])
        let reply = routing.reply(to: request, topic: "cart_responses", value: [])
        #expect(reply.key == nil)
        #expect(reply.headers == [
            KafkaHeader("content-type", "application/json"), KafkaHeader(key: "correlation-id", value: nil),
            KafkaHeader(key: "kafka_correlationId", value: []),
        ])
        let plain = routing.reply(to: Fixture.record(key: [], headers: []), topic: "cart_responses", value: [1])
        #expect(plain.key == [])
        #expect(plain.headers == [KafkaHeader("content-type", "application/json")])
    }

    // MARK: Dead letters

    @Test func deadLetterCopyKeepsTheRecordAndSaysWhereItCameFrom() {
        let routing = ReplyRouting(topics: Fixture.topics(names: ["order_service_dlq": "ops.dlq"]))
        let headers = [KafkaHeader(key: "correlation-id", value: [0xFF]), KafkaHeader("reply-to", "evil"), KafkaHeader(key: "n", value: nil)]
        let value: [UInt8] = [0x7B, 0xC3, 0x28]
        let source = KafkaRecord(topic: "order_requests", partition: 5, offset: 123_456_789_012, key: [0x00, 0x01], value: value, headers: headers)
        let dlq = routing.deadLetter(source, error: "user_id must be an integer")
        #expect(dlq.topic == "ops.dlq")
        #expect(dlq.partition == nil)
        #expect(dlq.key == [0x00, 0x01])
        #expect(dlq.value == value)
        // The record's own headers, then ours; Spring's kafka_dlt-* headers follow (EcosystemConventionsTests).
        #expect(Array(dlq.headers.prefix(headers.count + 4)) == headers + [
            KafkaHeader("dlq-source-topic", "order_requests"), KafkaHeader("dlq-source-partition", "5"),
            KafkaHeader("dlq-source-offset", "123456789012"), KafkaHeader("dlq-error", "user_id must be an integer"),
        ])
        #expect(dlq.headers.dropFirst(headers.count + 4).allSatisfy { $0.key.hasPrefix("kafka_dlt-") || $0.key == "kafka_deliveryAttempt" })
    }

    @Test func deadLetterCopyOfANullRecordAndALongError() {
        let routing = ReplyRouting(topics: topics)
        let source = KafkaRecord(topic: "cart_requests", partition: 0, offset: 0, key: nil, value: nil)
        let dlq = routing.deadLetter(source, error: String(repeating: "e", count: 5_000))
        #expect(dlq.topic == "order_service_dlq")
        #expect(dlq.key == nil)
        #expect(dlq.value == nil)
        #expect(Array(dlq.headers.map(\.key).prefix(4)) == ["dlq-source-topic", "dlq-source-partition", "dlq-source-offset", "dlq-error"])
        let error = dlq.headers.first { $0.key == "dlq-error" }?.value ?? []
        #expect(error.count <= 1_000 && error.count > 0)
    }
}

import Kafka

/// Where a reply goes and which headers it carries (CONTRACT section 2).
public struct ReplyRouting: Sendable {
    public let topics: Topics
    /// Topics honoured in `reply-to` besides the declared response topics: exact names, or a
    /// prefix ending in `*`. Compared byte for byte: no case folding, trimming or normalisation.
    public let allowList: [String]

    public init(topics: Topics, allowList: [String] = []) {
        self.topics = topics
        self.allowList = allowList
    }

    public enum Target: Sendable, Equatable {
        case topic(String)
        /// The requested reply topic is not allowed: answer `invalid_reply_to` on this default topic.
        case rejected(defaultTopic: String)
    }

    public func target(for record: KafkaRecord) -> Target {
        let fallback = topics.defaultResponseTopic(forRequestTopic: record.topic) ?? topics.name("cart_responses")
        guard let header = record.header("reply-to") ?? record.header("kafka_replyTopic") else { return .topic(fallback) }
        guard let wanted = header.stringValue, isAllowed(wanted) else { return .rejected(defaultTopic: fallback) }
        return .topic(wanted)
    }

    func isAllowed(_ topic: String) -> Bool {
        guard !topic.isEmpty, topic.utf8.count <= 249,
            topic.utf8.allSatisfy({ b in
                (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2E || b == 0x5F || b == 0x2D
            })
        else { return false }
        if topics.responseTopicNames.contains(topic) { return true }
        return allowList.contains { entry in
            entry.hasSuffix("*") ? topic.utf8.starts(with: entry.dropLast().utf8) && topic.utf8.count > entry.utf8.count - 1 : entry == topic
        }
    }

    /// Headers copied from request to reply: correlation ids unchanged (bytes), trace context.
    public static let copiedHeaders: Set<String> = ["correlation-id", "kafka_correlationId", "traceparent", "tracestate"]

    public func reply(to record: KafkaRecord, topic: String, value: [UInt8]) -> KafkaOutgoingRecord {
        var headers = [KafkaHeader("content-type", "application/json")]
        headers += record.headers.filter { Self.copiedHeaders.contains($0.key) }
        return KafkaOutgoingRecord(topic: topic, key: record.key, value: value, headers: headers)
    }

    /// An unchanged copy of a record for the dead-letter topic, with where it came from and why.
    public func deadLetter(_ record: KafkaRecord, error: String) -> KafkaOutgoingRecord {
        KafkaOutgoingRecord(
            topic: topics.deadLetters, key: record.key, value: record.value,
            headers: record.headers + [
                KafkaHeader("dlq-source-topic", record.topic), KafkaHeader("dlq-source-partition", String(record.partition)),
                KafkaHeader("dlq-source-offset", String(record.offset)), KafkaHeader("dlq-error", String(error.prefix(1000))),
            ])
    }
}

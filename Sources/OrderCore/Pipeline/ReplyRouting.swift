import Kafka

/// Where a reply goes and which headers it carries (CONTRACT section 2).
public struct ReplyRouting: Sendable {
    public let topics: Topics
    /// Topics honoured in `reply-to` besides the declared response topics: exact names, or a
    /// prefix ending in `*`. Compared byte for byte: no case folding, trimming or normalisation.
    public let allowList: [String]
    /// The largest record the service sends (`ORDER_SERVICE_MAX_RECORD_BYTES`): key, value and
    /// headers of every reply, dead-letter copy and other output stay within `recordBudget`.
    public let maxRecordBytes: Int
    /// The consumer group, for dead letters' `kafka_dlt-original-consumer-group` (nil: left out).
    public let groupId: String?
    /// The declared response topics' real names (asked for every record: computed once).
    public let responseTopicNames: Set<String>

    public init(topics: Topics, allowList: [String] = [], maxRecordBytes: Int = Limits.defaultMaxRecordBytes, groupId: String? = nil) {
        self.topics = topics
        self.allowList = allowList
        self.maxRecordBytes = maxRecordBytes
        self.groupId = groupId
        self.responseTopicNames = topics.responseTopicNames
    }

    /// Room kept for the record's and its batch's framing (Kafka's limit counts them too), and for
    /// the trace headers a producer span puts on a record after it was sized (`traceparent` and a
    /// bounded `tracestate`: `KafkaHeaderExtractor.boundedTraceState`).
    static let framingBytes = 1_536
    /// Bytes of key, value and headers a record may have.
    public var recordBudget: Int { max(0, maxRecordBytes - Self.framingBytes) }
    /// The value of a reply always has at least this much room: a request's oversized key or
    /// copied headers are dropped from its reply rather than make the reply impossible. It holds
    /// the largest single object of the contract (a full cart or order: 100 lines, names of 512
    /// bytes escaped at worst six to one, ~324 KB; `RecordBudgetTests`), so every cart reply fits
    /// and every page has room for its first item.
    public static let minimumReplyValueBytes = 384 * 1024
    /// The least `ORDER_SERVICE_MAX_RECORD_BYTES`: the value floor, framing, and room for a key
    /// and the copied headers.
    public static let minimumMaxRecordBytes = 512 * 1024

    /// The default response topic of the record's request topic.
    public func defaultTopic(for record: KafkaRecord) -> String {
        topics.defaultResponseTopic(forRequestTopic: record.topic) ?? topics.name("cart_responses")
    }

    public enum Target: Sendable, Equatable {
        case topic(String)
        /// The requested reply topic is not allowed: answer `invalid_reply_to` on this default topic.
        case rejected(defaultTopic: String)
    }

    public func target(for record: KafkaRecord) -> Target {
        let fallback = defaultTopic(for: record)
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
        if responseTopicNames.contains(topic) { return true }
        return allowList.contains { entry in
            entry.hasSuffix("*") ? topic.utf8.starts(with: entry.dropLast().utf8) && topic.utf8.count > entry.utf8.count - 1 : entry == topic
        }
    }

    /// Allow-list entries that would let a client name one of the service's own topics that is
    /// not a response topic (request, upstream, event, dead-letter, metrics topics): replies
    /// written there would be read as requests, upstream answers or events. Refused at start.
    public static func dangerousAllowListEntries(_ allowList: [String], topics: Topics) -> [(entry: String, topic: String)] {
        let own = topics.specs.map(\.name).filter { !topics.responseTopicNames.contains($0) }
        var found: [(String, String)] = []
        for entry in allowList {
            let prefix = entry.hasSuffix("*") ? String(entry.dropLast()) : nil
            for name in own where prefix.map({ name.utf8.starts(with: $0.utf8) && name.utf8.count > $0.utf8.count }) ?? (name == entry) {
                found.append((entry, name))
            }
        }
        return found
    }

    /// Headers copied from request to reply: correlation ids unchanged (bytes), trace context.
    public static let copiedHeaders: Set<String> = Set(copiedHeaderOrder)
    static let copiedHeaderOrder = ["correlation-id", "kafka_correlationId", "traceparent", "tracestate"]

    /// Key and headers of the reply to `record`: its key and copied headers (the last of each
    /// name, as `KafkaRecord.header` reads them), unless together they would leave the value less
    /// than `valueBytes` (then the copied headers go, and if that is not enough, the key).
    private func replyFrame(for record: KafkaRecord, valueBytes: Int = minimumReplyValueBytes) -> (key: [UInt8]?, headers: [KafkaHeader]) {
        let contentType = KafkaHeader("content-type", "application/json")
        var copied: [KafkaHeader] = []
        for name in Self.copiedHeaderOrder { if let h = record.header(name) { copied.append(h) } }
        var frame = (key: record.key, headers: [contentType] + copied)
        let room = recordBudget - valueBytes
        func size() -> Int { (frame.key?.count ?? 0) + KafkaHeader.bytes(of: frame.headers) }
        if size() > room { frame.headers = [contentType] }
        if size() > room { frame.key = nil }
        return frame
    }

    /// Bytes the value of a reply to `record` may have.
    public func replyValueBudget(for record: KafkaRecord) -> Int {
        let frame = replyFrame(for: record)
        return recordBudget - (frame.key?.count ?? 0) - KafkaHeader.bytes(of: frame.headers)
    }

    /// The reply to `record`: its frame chosen against this value (a stored reply sent again to a
    /// repeat with larger headers than the first delivery's still fits).
    public func reply(to record: KafkaRecord, topic: String, value: [UInt8], partition: Int32? = nil) -> KafkaOutgoingRecord {
        let frame = replyFrame(for: record, valueBytes: max(value.count, Self.minimumReplyValueBytes))
        var reply = KafkaOutgoingRecord(topic: topic, key: frame.key, value: value, headers: frame.headers)
        reply.partition = partition
        return reply
    }

    /// Spring Kafka's `kafka_replyPartition` (a reply container on assigned partitions): a 4-byte
    /// big-endian partition of the reply topic.
    public enum ReplyPartition: Sendable, Equatable {
        /// No header: the reply goes to the key's partition.
        case any
        case partition(Int32)
        /// Not 4 bytes, or negative: refused like an invalid reply-to.
        case invalid
    }

    public func replyPartition(for record: KafkaRecord) -> ReplyPartition {
        guard let header = record.header("kafka_replyPartition") else { return .any }
        guard let v = header.value, v.count == 4 else { return .invalid }
        let p = Int32(bitPattern: UInt32(v[0]) << 24 | UInt32(v[1]) << 16 | UInt32(v[2]) << 8 | UInt32(v[3]))
        return p >= 0 ? .partition(p) : .invalid
    }

    /// Why a record was dead-lettered, in `kafka_dlt-exception-fqcn` (Spring's field for the
    /// exception class; here a stable name per kind).
    public enum DeadLetterKind: String, Sendable {
        case invalidRequest = "order_service.InvalidRequest"
        case internalError = "order_service.InternalError"
        case crashLoop = "order_service.CrashLoop"
        case replyRefused = "order_service.ReplyRefused"
        case invalidDeductionResult = "order_service.InvalidDeductionResult"
        /// A record of the service's own (an outbox record) the broker refused for good.
        case unsendable = "order_service.Unsendable"
    }

    /// An error for `dlq-error`: at most ~1,000 bytes (a cut scalar becomes U+FFFD).
    static func errorText(_ error: String) -> String { String(decoding: error.utf8.prefix(1000), as: UTF8.self) }

    /// A dead-letter copy of a record the service meant to send and the broker refused for good
    /// (an outbox record): `dlq-source-topic` names where it was going, so `replay-dlq` can send it
    /// there once the cause is mended. Cut to fit like `deadLetter(_:error:)`.
    public func deadLetter(unsendable record: KafkaOutgoingRecord, error: String) -> KafkaOutgoingRecord {
        let message = Self.errorText(error)
        let source = [
            KafkaHeader("dlq-source-topic", record.topic), KafkaHeader("dlq-error", message),
            KafkaHeader("kafka_dlt-original-topic", record.topic),
            KafkaHeader("kafka_dlt-exception-fqcn", DeadLetterKind.unsendable.rawValue), KafkaHeader("kafka_dlt-exception-message", message),
        ]
        let copy = KafkaOutgoingRecord(topic: topics.deadLetters, key: record.key, value: record.value, headers: record.headers + source)
        return fitted(copy, source: source, headers: record.headers.count)
    }

    /// A copy of a record for the dead-letter topic, with where it came from and why: the
    /// project's `dlq-*` headers and Spring Kafka's `kafka_dlt-*` headers (numbers as Spring
    /// writes them: partition 4 bytes, offset and timestamp 8 bytes, big-endian). Unchanged when it
    /// fits; otherwise without its value (header `dlq-value-omitted`: the value's size), then
    /// without its own headers (`dlq-headers-omitted`), then without its key.
    public func deadLetter(_ record: KafkaRecord, error: String, kind: DeadLetterKind = .invalidRequest, attempts: Int32 = 1) -> KafkaOutgoingRecord {
        let message = Self.errorText(error)
        var source = [
            KafkaHeader("dlq-source-topic", record.topic), KafkaHeader("dlq-source-partition", String(record.partition)),
            KafkaHeader("dlq-source-offset", String(record.offset)), KafkaHeader("dlq-error", message),
            KafkaHeader("kafka_dlt-original-topic", record.topic),
            KafkaHeader(key: "kafka_dlt-original-partition", value: Self.bigEndian(UInt32(bitPattern: record.partition))),
            KafkaHeader(key: "kafka_dlt-original-offset", value: Self.bigEndian(UInt64(bitPattern: record.offset))),
            KafkaHeader(key: "kafka_dlt-original-timestamp", value: Self.bigEndian(UInt64(bitPattern: record.timestampMs ?? -1))),
            KafkaHeader("kafka_dlt-original-timestamp-type", record.timestampType.rawValue),
            KafkaHeader("kafka_dlt-exception-fqcn", kind.rawValue), KafkaHeader("kafka_dlt-exception-message", message),
            KafkaHeader(key: "kafka_deliveryAttempt", value: Self.bigEndian(UInt32(bitPattern: attempts))),
        ]
        if let groupId { source.append(KafkaHeader("kafka_dlt-original-consumer-group", groupId)) }
        let copy = KafkaOutgoingRecord(topic: topics.deadLetters, key: record.key, value: record.value, headers: record.headers + source)
        return fitted(copy, source: source, headers: record.headers.count)
    }

    /// A dead-letter copy cut to the budget: without its value (`dlq-value-omitted`: its size),
    /// then with only the `source` headers (`dlq-headers-omitted`: how many went), then without its key.
    private func fitted(_ full: KafkaOutgoingRecord, source: [KafkaHeader], headers: Int) -> KafkaOutgoingRecord {
        var copy = full
        let valueBytes = String(full.value?.count ?? 0)
        if copy.payloadBytes > recordBudget {
            copy.value = []
            copy.headers.append(KafkaHeader("dlq-value-omitted", valueBytes))
        }
        if copy.payloadBytes > recordBudget {
            copy.headers = source + [KafkaHeader("dlq-value-omitted", valueBytes), KafkaHeader("dlq-headers-omitted", String(headers))]
        }
        if copy.payloadBytes > recordBudget { copy.key = nil }
        return copy
    }

    /// The bytes of an integer, most significant first (Java's ByteBuffer order, as Spring writes numbers).
    public static func bigEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        withUnsafeBytes(of: value.bigEndian) { Array($0) }
    }
}

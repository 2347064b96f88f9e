/// A Kafka header. A header value may be null, which is different from empty.
public struct KafkaHeader: Sendable, Hashable {
    public var key: String
    public var value: [UInt8]?

    public init(key: String, value: [UInt8]?) {
        self.key = key
        self.value = value
    }

    public init(_ key: String, _ string: String) {
        self.init(key: key, value: Array(string.utf8))
    }

    /// The value as UTF-8, or nil when it is null or not valid UTF-8.
    public var stringValue: String? {
        value.flatMap { String(validating: $0, as: UTF8.self) }
    }

    /// A header's two length prefixes in a record (varints of at most 5 bytes each).
    public static let framingBytes = 10

    /// Bytes these headers take in a record: names, values and their length prefixes.
    public static func bytes(of headers: [KafkaHeader]) -> Int {
        headers.reduce(0) { $0 + framingBytes + $1.key.utf8.count + ($1.value?.count ?? 0) }
    }
}

public struct TopicPartition: Sendable, Hashable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32
    public init(_ topic: String, _ partition: Int32) {
        self.topic = topic
        self.partition = partition
    }
    public var description: String { "\(topic)[\(partition)]" }
}

/// A consumed record. Key, value and headers are copied out of librdkafka's message before it is
/// freed; a null key or value stays nil (it is data, not an error).
public struct KafkaRecord: Sendable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    public var key: [UInt8]?
    public var value: [UInt8]?
    public var headers: [KafkaHeader]
    /// Milliseconds since the epoch, when the broker or producer set one.
    public var timestampMs: Int64?
    /// Who set the timestamp.
    public var timestampType: TimestampType

    public enum TimestampType: String, Sendable {
        /// Kafka's names, as Java clients print them.
        case createTime = "CreateTime", logAppendTime = "LogAppendTime", none = "NoTimestampType"
    }

    public init(
        topic: String, partition: Int32, offset: Int64, key: [UInt8]?, value: [UInt8]?,
        headers: [KafkaHeader] = [], timestampMs: Int64? = nil, timestampType: TimestampType? = nil
    ) {
        self.timestampType = timestampType ?? (timestampMs == nil ? .none : .createTime)
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.headers = headers
        self.timestampMs = timestampMs
    }

    public var topicPartition: TopicPartition { TopicPartition(topic, partition) }

    /// Bytes of key, value and headers (names and values): what a buffer of records holds.
    public var payloadBytes: Int {
        payloadByteCount(key: key, value: value, headers: headers)
    }

    /// The last header with this name (Kafka allows repeats; the last one wins, as in most clients).
    public func header(_ name: String) -> KafkaHeader? { headers.last { $0.key == name } }
}

/// A record to produce.
public struct KafkaOutgoingRecord: Sendable {
    public var topic: String
    public var partition: Int32?
    public var key: [UInt8]?
    public var value: [UInt8]?
    public var headers: [KafkaHeader]

    public init(
        topic: String, partition: Int32? = nil, key: [UInt8]?, value: [UInt8]?, headers: [KafkaHeader] = []
    ) {
        self.topic = topic
        self.partition = partition
        self.key = key
        self.value = value
        self.headers = headers
    }
}

public struct DeliveryReport: Sendable, Equatable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64

    public init(topic: String, partition: Int32, offset: Int64) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
    }
}

extension KafkaOutgoingRecord {
    /// Bytes of key, value and headers (names and values): what a record's size limit counts,
    /// without the record's and batch's framing.
    public var payloadBytes: Int {
        payloadByteCount(key: key, value: value, headers: headers)
    }
}

/// Bytes of key, value and headers, without the record's and batch's framing: one count for
/// consumed and outgoing records. Each header also counts its two length prefixes
/// (`KafkaHeader.framingBytes`): many tiny headers weigh what the broker's limit says they weigh.
private func payloadByteCount(key: [UInt8]?, value: [UInt8]?, headers: [KafkaHeader]) -> Int {
    (key?.count ?? 0) + (value?.count ?? 0) + KafkaHeader.bytes(of: headers)
}

/// A position in a partition: an absolute offset (≥ 0) or one of librdkafka's logical ones.
/// Used where a position is chosen (`KafkaConsumer.assign`); consumed records keep their plain
/// `Int64` offset.
public struct KafkaOffset: Sendable, Hashable, CustomStringConvertible {
    public var rawValue: Int64

    public init(_ rawValue: Int64) { self.rawValue = rawValue }

    /// The partition's first record.
    public static let beginning = KafkaOffset(-2)
    /// After the partition's last record: only records produced from now on.
    public static let end = KafkaOffset(-1)
    /// The group's committed offset (then `auto.offset.reset`).
    public static let stored = KafkaOffset(-1000)
    /// What librdkafka reports when a partition has no committed offset.
    public static let invalid = KafkaOffset(-1001)

    public var isLogical: Bool { rawValue < 0 }

    public var description: String {
        switch self {
        case .beginning: "beginning"
        case .end: "end"
        case .stored: "stored"
        case .invalid: "invalid"
        default: String(rawValue)
        }
    }
}

import Foundation

extension KafkaConsumer {
    /// How the consumer reads: decided once, from the configuration, when it is created.
    public enum Mode: Sendable, Equatable {
        /// A member of this consumer group: `subscribe`, rebalances, commits.
        case group(id: String)
        /// Group-less: `assign` only, no rebalances, nothing committed automatically.
        case assigned

        /// `group.id` set: a group member; else group-less.
        public init(configuration: KafkaConfiguration) {
            self = configuration["group.id"].map { .group(id: $0) } ?? .assigned
        }
    }

    /// The Swift side of the consumer.
    public struct Options: Sendable {
        /// Fetched records not yet taken from `records`, per partition. At this many the
        /// partition stops fetching until half of them were taken (bounded memory). librdkafka
        /// may take up to a second to fetch again, so keep this well above a second's worth.
        public var maxBufferedRecordsPerPartition: Int
        /// The same bound in payload bytes (key, value, headers), whichever comes first: with
        /// records near the broker's size limit, 2,000 of them per partition would be gigabytes.
        public var maxBufferedBytesPerPartition: Int
        /// 4 MiB: with the service's 17 request partitions, about librdkafka's own prefetch bound
        /// (`queued.max.messages.kbytes`, 64 MiB) again at most.
        public static let defaultMaxBufferedBytesPerPartition = 4 << 20
        /// On a rebalance, how long to wait for the record being handled (see `KafkaConsumer`) to
        /// be stored, before `onRevoking`, the commit and giving the partitions up. `.zero` does
        /// not wait: for readers that drain in `Rebalance.onRevoking` themselves. Not used with
        /// push delivery (`deliver`). `close()` never waits: stop handling records first.
        public var revokeDrainTimeout: Duration
        /// librdkafka's statistics JSON, every `statistics.interval.ms` (set that property to
        /// enable it); called on a librdkafka thread: keep it short.
        public var onStatistics: (@Sendable (String) -> Void)?
        /// Push delivery: each record of an assigned partition is handed to this sink on the poll
        /// thread as soon as it is fetched, instead of being buffered for `records` (which then
        /// yields nothing and only ends when the consumer closes). It must return at once and
        /// never block: it runs between polls. Because the rebalance callback runs on the same
        /// thread, every record pushed before a revoke reached the sink before `onRevoking`, so
        /// the revoke does not wait for a hand-off (`revokeDrainTimeout` is not used); the sink's
        /// owner drains in `onRevoking`. `pause` holds the partition's records back in its
        /// buffer (fetching goes on until the buffer is full, so a short pause costs no refetch);
        /// after `resume` the poll thread hands them over first, in order.
        public var deliver: (@Sendable (KafkaRecord) -> Void)?

        public init(
            maxBufferedRecordsPerPartition: Int = 2_000, revokeDrainTimeout: Duration = .seconds(10),
            onStatistics: (@Sendable (String) -> Void)? = nil, deliver: (@Sendable (KafkaRecord) -> Void)? = nil,
            maxBufferedBytesPerPartition: Int = Options.defaultMaxBufferedBytesPerPartition
        ) {
            self.maxBufferedRecordsPerPartition = max(1, maxBufferedRecordsPerPartition)
            self.maxBufferedBytesPerPartition = max(1, maxBufferedBytesPerPartition)
            self.revokeDrainTimeout = revokeDrainTimeout
            self.onStatistics = onStatistics
            self.deliver = deliver
        }
    }
}

extension Duration {
    /// Whole milliseconds for librdkafka's `int timeout_ms` parameters (clamped, never trapping).
    var rdKafkaMilliseconds: Int32 {
        let (seconds, atto) = components
        let ms = seconds.multipliedReportingOverflow(by: 1_000)
        guard !ms.overflow else { return seconds < 0 ? 0 : Int32.max }
        let total = ms.partialValue.addingReportingOverflow(atto / 1_000_000_000_000_000)
        guard !total.overflow else { return Int32.max }
        return Int32(clamping: max(0, total.partialValue))
    }

    /// Seconds, for Foundation's `TimeInterval` waits.
    var timeInterval: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

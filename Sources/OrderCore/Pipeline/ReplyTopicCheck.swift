/// Whether a `reply-to` topic exists (and how many partitions it has), checked before a request
/// takes effect, so that a reply that could never be written is answered `invalid_reply_to` on the
/// default topic instead of stalling its partition. Declared response topics are not checked for
/// existence (the service creates them); allow-listed ones are, from the cluster's metadata, and
/// so is a Spring `kafka_replyPartition` against the topic's partition count. A topic seen is
/// trusted for `trustFor`, and the metadata is asked at most once per `refreshAtMost` (one request
/// serves every caller waiting meanwhile), so a flood of bad reply-to names costs four requests a
/// second; a topic created less than that long ago may still count as missing. When the metadata
/// cannot be read (broker trouble) the topic is assumed to exist: the send is then retried like any
/// other during an outage.
public actor ReplyTopicCheck {
    public enum Lookup: Sendable, Equatable {
        case exists(partitions: Int32)
        case missing
        /// The metadata could not be read.
        case unknown
    }

    private let topicPartitions: @Sendable () async throws -> [String: Int32]
    private let trustFor: Duration
    private let refreshAtMost: Duration
    private var seen: [String: (partitions: Int32, at: ContinuousClock.Instant)] = [:]
    private var lastRefresh: ContinuousClock.Instant?
    private var known: [String: Int32] = [:]
    private var refreshing: Task<[String: Int32]?, Never>?

    public init(
        trustFor: Duration = .seconds(60), refreshAtMost: Duration = .milliseconds(250),
        topicPartitions: @escaping @Sendable () async throws -> [String: Int32]
    ) {
        self.topicPartitions = topicPartitions
        self.trustFor = trustFor
        self.refreshAtMost = refreshAtMost
    }

    public func exists(_ topic: String) async -> Bool { await lookup(topic) != .missing }

    public func lookup(_ topic: String) async -> Lookup {
        let now = ContinuousClock.now
        if let s = seen[topic], now - s.at < trustFor { return .exists(partitions: s.partitions) }
        if let last = lastRefresh, now - last < refreshAtMost, refreshing == nil {
            return known[topic].map { .exists(partitions: $0) } ?? .missing
        }
        let task = refreshing ?? Task { [topicPartitions] in try? await topicPartitions() }
        refreshing = task
        let counts = await task.value
        if refreshing == task {
            refreshing = nil
            lastRefresh = .now
            if let counts {
                known = counts
                let at = ContinuousClock.now
                seen = seen.filter { counts[$0.key] != nil }
                for (name, n) in counts where seen.count < 10_000 { seen[name] = (n, at) }
            }
        }
        guard let counts else { return .unknown }
        return counts[topic].map { .exists(partitions: $0) } ?? .missing
    }
}

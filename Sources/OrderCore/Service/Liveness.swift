/// Decides from what the service is doing whether it is alive (the heartbeat file is touched)
/// and ready (the readiness file is touched), so that the probes see progress, not just a timer.
///
/// Alive: the consumer's poll loop ran within `pollBound`, and no running record has gone
/// `progressBound` without finishing or beginning a retry. Waiting out an outage (retries with
/// backoff) counts as progress, so a database or broker outage does not restart the pod; a
/// handler stuck on an await that never returns does (docs/reliability.md, "Health probes").
///
/// Ready: alive, and the group consumer's latest statistics (at most `groupStatsMaxAge` old)
/// show it in a settled group (`join_state` steady), with or without partitions: a member of a
/// group with more members than partitions is a standby, and ready. Nil `groupStatsMaxAge`
/// (statistics turned off): ready whenever alive.
public struct Liveness: Sendable {
    public struct Sample: Sendable {
        /// The group consumer's `pollCount`.
        public var pollCount: UInt64
        public var progress: Dispatcher.Progress
        /// The group consumer's latest statistics (`GroupWatch.latest`).
        public var group: GroupWatch.Snapshot?
        public var groupSeenAt: ContinuousClock.Instant?

        public init(
            pollCount: UInt64, progress: Dispatcher.Progress, group: GroupWatch.Snapshot? = nil,
            groupSeenAt: ContinuousClock.Instant? = nil
        ) {
            self.pollCount = pollCount
            self.progress = progress
            self.group = group
            self.groupSeenAt = groupSeenAt
        }
    }

    public struct Status: Sendable, Equatable {
        public var alive: Bool
        public var ready: Bool
        /// Why not alive, or alive but not ready; nil when both.
        public var reason: String?
    }

    /// A poll returns within 50 ms, but rebalance callbacks block the poll thread: a revoke waits
    /// up to 10 s for the record being read and 30 s for running records. 60 s is also the
    /// rebalance timeout the service sets (`max.poll.interval.ms`).
    public let pollBound: Duration
    public let progressBound: Duration
    public let groupStatsMaxAge: Duration?
    private var lastPollCount: UInt64?
    private var pollSeenAt: ContinuousClock.Instant

    public init(
        pollBound: Duration = .seconds(60), progressBound: Duration = .seconds(120), groupStatsMaxAge: Duration? = .seconds(15),
        now: ContinuousClock.Instant = .now
    ) {
        self.pollBound = pollBound
        self.progressBound = progressBound
        self.groupStatsMaxAge = groupStatsMaxAge
        pollSeenAt = now
    }

    /// Judges one sample. The poll loop counts as running when its count changed since the
    /// previous sample (or the first sample came within `pollBound` of `init`).
    public mutating func assess(_ sample: Sample, now: ContinuousClock.Instant = .now) -> Status {
        if sample.pollCount != lastPollCount {
            lastPollCount = sample.pollCount
            pollSeenAt = now
        }
        let pollStalled = now - pollSeenAt
        if pollStalled > pollBound {
            return Status(alive: false, ready: false, reason: "the consumer's poll loop has not run for \(Self.seconds(pollStalled)) s")
        }
        if let since = sample.progress.stuckSince, now - since > progressBound {
            return Status(
                alive: false, ready: false,
                reason: "a record has run for \(Self.seconds(now - since)) s without finishing or retrying "
                    + "(\(sample.progress.inFlight) in flight, \(sample.progress.completed) finished since start)")
        }
        guard let maxAge = groupStatsMaxAge else { return Status(alive: true, ready: true) }
        guard let group = sample.group, let seen = sample.groupSeenAt, now - seen <= maxAge else {
            return Status(alive: true, ready: false, reason: "no recent consumer group statistics")
        }
        guard group.joinState == "steady" else {
            return Status(alive: true, ready: false, reason: "consumer group not settled (join_state \(group.joinState))")
        }
        return Status(alive: true, ready: true)
    }

    private static func seconds(_ d: Duration) -> Int64 { d.components.seconds }
}

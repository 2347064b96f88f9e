import Logging
import Synchronization

/// Watches the group consumer's state in librdkafka's statistics (`cgrp.state`,
/// `cgrp.join_state`, `cgrp.assignment_size`) and warns when the consumer has not been in a
/// settled group (`join_state` "steady") for longer than `bound` — a rebalance normally settles
/// within the rebalance timeout. It logs and changes nothing; readiness (`Liveness`) reads `latest`.
public final class GroupWatch: Sendable {
    public struct Snapshot: Sendable, Equatable {
        public var state: String
        public var joinState: String
        public var assignmentSize: Int64
    }

    private struct Watch {
        var lastSteady: ContinuousClock.Instant
        var lastWarning: ContinuousClock.Instant?
        var last: Snapshot?
        var lastAt: ContinuousClock.Instant?
    }

    private let bound: Duration
    private let logger: Logger
    private let watch: Mutex<Watch>

    public init(bound: Duration = .seconds(120), logger: Logger, now: ContinuousClock.Instant = .now) {
        self.bound = bound
        self.logger = logger
        watch = Mutex(Watch(lastSteady: now))
    }

    /// The group part of a statistics document (nil when it has none).
    public static func snapshot(statistics json: String) -> Snapshot? {
        guard let stats = try? JSON.parse(Array(json.utf8)), let cgrp = stats["cgrp"],
            case .string(let state)? = cgrp["state"], case .string(let join)? = cgrp["join_state"]
        else { return nil }
        var size: Int64 = 0
        if case .int(let n)? = cgrp["assignment_size"] { size = n }
        return Snapshot(state: state, joinState: join, assignmentSize: size)
    }

    /// Feeds one statistics document; returns true when it warned.
    @discardableResult
    public func update(statistics json: String, now: ContinuousClock.Instant = .now) -> Bool {
        guard let s = Self.snapshot(statistics: json) else { return false }
        let warn = watch.withLock { w -> Duration? in
            w.last = s
            w.lastAt = now
            if s.joinState == "steady" {
                w.lastSteady = now
                w.lastWarning = nil
                return nil
            }
            let unsettled = now - w.lastSteady
            guard unsettled > bound else { return nil }
            if let last = w.lastWarning, now - last < .seconds(300) { return nil }
            w.lastWarning = now
            return unsettled
        }
        guard let warn else { return false }
        logger.warning(
            "consumer group not settled for \(warn.components.seconds) s",
            metadata: ["cgrp_state": "\(s.state)", "join_state": "\(s.joinState)", "assignment_size": "\(s.assignmentSize)"])
        return true
    }

    /// The last group state seen.
    public var last: Snapshot? { watch.withLock { $0.last } }

    /// The last group state seen and when (statistics stop when the poll loop does).
    public var latest: (snapshot: Snapshot, at: ContinuousClock.Instant)? {
        watch.withLock { w in w.last.flatMap { s in w.lastAt.map { (s, $0) } } }
    }
}

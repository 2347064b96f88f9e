import Kafka
import Logging
import Synchronization

/// Owns ordering, concurrency, offsets, retries, partition ownership and backpressure for consumed
/// records (the consumer only does what it is told: pause or resume these partitions, store this
/// offset; its rebalance hooks tell the dispatcher what it owns):
/// - records of one lane (user) run one at a time in offset order; lanes run concurrently;
/// - a record's offset becomes committable only after its answer was acknowledged by the broker,
///   and never past an earlier record still running;
/// - outages (retriable errors) are retried with backoff until they pass; other failures are
///   answered through the handler's `failure` and never stop the consumer;
/// - when too much is in flight, fetching pauses until the backlog halves;
/// - after an unclean exit in the group, newly assigned partitions start on probation: their first
///   records run one at a time (all such partitions together) behind a durable marker, and a
///   record that was in progress at too many unclean exits is answered through the handler's
///   `poisoned` instead of handled.
public actor Dispatcher {
    public struct Configuration: Sendable {
        /// Records accepted but not finished before fetching pauses. Default 2,000.
        public var maxInFlight: Int = 2_000
        /// First retry delay after an outage; doubles up to `maxBackoff`. Default 50 ms / 5 s.
        public var initialBackoff: Duration = .milliseconds(50)
        public var maxBackoff: Duration = .seconds(5)
        var backoff: Backoff { Backoff(initial: initialBackoff, maximum: maxBackoff) }
        /// Records of the partitions assigned after an unclean exit in the group that run one at a
        /// time behind the marker, all partitions together (0: no probation). Default 2,000, the
        /// default `maxInFlight` (see docs/reliability.md).
        public var probationRecords: Int = 2_000
        /// Probation ends after this long even when fewer records came. Default 5 min.
        public var probationDuration: Duration = .seconds(300)
        /// A probation record found in progress at this many unclean exits before is not handled
        /// again but answered through `poisoned`. Default 2: one kill by an operator spares it.
        public var poisonAfter: Int = 2
        public init() {}
    }

    /// The crash-loop breaker's view of the world (`RunRegistry` in the service; fakes in tests).
    public struct CrashGuard: Sendable {
        /// Whether an instance of the group exited uncleanly a short while ago. Asked on the poll
        /// thread when partitions are assigned, so it must be cheap.
        public var recentUncleanExit: @Sendable () -> Bool
        /// Durably marks the record in progress; returns how many unclean exits it was in
        /// progress at before (0: new to the marker).
        public var markInProgress: @Sendable (TopicPartition, Int64) async throws -> Int
        /// The record was answered and its answer acknowledged: clears its marker.
        public var clearInProgress: @Sendable (TopicPartition, Int64) async throws -> Void
        public init(
            recentUncleanExit: @escaping @Sendable () -> Bool,
            markInProgress: @escaping @Sendable (TopicPartition, Int64) async throws -> Int,
            clearInProgress: @escaping @Sendable (TopicPartition, Int64) async throws -> Void
        ) {
            self.recentUncleanExit = recentUncleanExit
            self.markInProgress = markInProgress
            self.clearInProgress = clearInProgress
        }
    }

    /// What the dispatcher needs from the outside world; closures so tests need no broker.
    public struct Effects: Sendable {
        public var send: @Sendable ([KafkaOutgoingRecord]) async throws -> Void
        /// Makes the offset committable (the consumer's `store`); only for partitions owned.
        public var storeOffset: @Sendable (TopicPartition, Int64) -> Void
        /// Stops (true) or resumes (false) fetching these partitions: the in-flight limit. The
        /// dispatcher names the partitions it owns, and pauses newly assigned ones while the
        /// limit holds (a rebalance forgets pauses).
        public var setPaused: @Sendable ([TopicPartition], Bool) -> Void
        public init(
            send: @escaping @Sendable ([KafkaOutgoingRecord]) async throws -> Void,
            storeOffset: @escaping @Sendable (TopicPartition, Int64) -> Void,
            setPaused: @escaping @Sendable ([TopicPartition], Bool) -> Void = { _, _ in }
        ) {
            self.send = send
            self.storeOffset = storeOffset
            self.setPaused = setPaused
        }
    }

    private let handler: any RecordHandler
    private let effects: Effects
    private let crashGuard: CrashGuard?
    private let config: Configuration
    private let logger: Logger
    private var tracker = OffsetTracker()
    private var lanes: [String: [KafkaRecord]] = [:]
    private var running: [String: Task<Void, Never>] = [:]
    /// Records being handled right now, per partition (queued ones excluded).
    private var active: [TopicPartition: Int] = [:]
    /// When each running record started or last began a retry (the health check's view: waiting
    /// out an outage is progress; a record that neither finishes nor retries for long is stuck).
    private var runningSince: [RecordID: ContinuousClock.Instant] = [:]
    private var completedRecords: UInt64 = 0
    private var paused: Bool {
        get { pausedFlag.load(ordering: .sequentiallyConsistent) }
        set { pausedFlag.store(newValue, ordering: .sequentiallyConsistent) }
    }
    /// Readable from the poll thread: a rebalance forgets pauses, so new partitions are paused again.
    private let pausedFlag = Atomic<Bool>(false)
    private var stopping = false
    private var idleWaiters: [(Set<TopicPartition>?, CheckedContinuation<Void, Never>)] = []
    /// Partitions currently owned, and those being given up. Records of partitions not owned or
    /// being revoked are not accepted (their next owner handles them); offsets of owned ones
    /// (also while revoking) are stored.
    private let ownership = Mutex<(owned: Set<TopicPartition>, revoking: Set<TopicPartition>)>(([], []))
    private var probation = Probation()
    /// Partitions assigned after a recent unclean exit, not yet taken into `probation` (filled on
    /// the poll thread); the flag keeps the normal path to one atomic load per record.
    private let probationPending = Mutex<Set<TopicPartition>>([])
    private let hasProbationPending = Atomic<Bool>(false)

    public init(
        handler: any RecordHandler, effects: Effects, configuration: Configuration = Configuration(), crashGuard: CrashGuard? = nil,
        logger: Logger
    ) {
        self.handler = handler
        self.effects = effects
        self.crashGuard = crashGuard
        self.config = configuration
        self.logger = logger
    }

    // MARK: Rebalance hooks (called from the consumer's poll thread)

    public nonisolated func partitionsAssigned(_ tps: [TopicPartition]) {
        ownership.withLock { $0.owned.formUnion(tps) }
        if let crashGuard, config.probationRecords > 0, !tps.isEmpty, crashGuard.recentUncleanExit() {
            logger.warning("an instance of the group exited uncleanly: partitions start on probation", metadata: [
                "partitions": "\(tps.map(\.description).sorted())", "probation.records": "\(config.probationRecords)",
            ])
            probationPending.withLock {
                $0.formUnion(tps)
                hasProbationPending.store(true, ordering: .releasing)
            }
        }
        if pausedFlag.load(ordering: .sequentiallyConsistent) {
            effects.setPaused(tps, true)
            // Resumed meanwhile (before these partitions were owned, or after): resume them too.
            if !pausedFlag.load(ordering: .sequentiallyConsistent) { effects.setPaused(tps, false) }
        }
    }

    /// Blocks the calling (poll) thread until records of these partitions that already started
    /// have finished, so their offsets are stored before the partitions move. Records not yet
    /// started are dropped: the next owner gets them from the committed offset.
    public nonisolated func partitionsRevoking(_ tps: [TopicPartition], timeout: Duration = .seconds(30)) {
        ownership.withLock { $0.revoking.formUnion(tps) }
        probationPending.withLock { $0.subtract(tps) }
        let done = Semaphore()
        Task {
            await self.dropQueued(Set(tps))
            await self.waitIdle(Set(tps))
            await self.forget(Set(tps))
            done.signal()
        }
        if !done.wait(timeout: timeout) { logger.warning("revoke: in-flight records did not finish in time") }
        ownership.withLock {
            $0.owned.subtract(tps)
            $0.revoking.subtract(tps)
        }
    }

    /// Whether records of this partition are accepted now (owned and not being revoked).
    public nonisolated func isOwned(_ tp: TopicPartition) -> Bool {
        ownership.withLock { $0.owned.contains(tp) && !$0.revoking.contains(tp) }
    }

    /// The owned partitions, for pausing and resuming them.
    private nonisolated var ownedPartitions: [TopicPartition] { ownership.withLock { Array($0.owned) } }

    private nonisolated func mayStoreOffset(_ tp: TopicPartition) -> Bool { ownership.withLock { $0.owned.contains(tp) } }

    // MARK: Records

    /// The consumer's records: accepted when their partition is owned and not being revoked (the
    /// next owner handles the others), in one hop. Returns at once; the record runs in its lane.
    /// Checked on the actor, so a revoke (which marks the partition first, then drops what is
    /// queued on the actor) never misses a record accepted here.
    public func offer(_ record: KafkaRecord) {
        guard isOwned(record.topicPartition) else { return }
        submit(record)
    }

    /// Accepts a consumed record, owned or not (an unowned one runs but its offset is not
    /// stored). Returns at once; the record runs in its lane.
    public func submit(_ record: KafkaRecord) {
        guard !stopping else { return }
        let tp = record.topicPartition
        tracker.begin(tp, record.offset)
        if hasProbationPending.load(ordering: .acquiring) { takePendingProbation() }
        if probation.isEmpty {
            enqueue(record, lane: handler.laneKey(for: record))
        } else {
            switch probation.route(record) {
            case .normal: enqueue(record, lane: handler.laneKey(for: record))
            case .probation: enqueue(record, lane: Self.probationLane)
            case .held: break
            }
        }
        if !paused, tracker.totalInFlight >= config.maxInFlight {
            paused = true
            effects.setPaused(ownedPartitions, true)
        }
    }

    private func enqueue(_ record: KafkaRecord, lane: String) {
        lanes[lane, default: []].append(record)
        if running[lane] == nil {
            running[lane] = Task { await self.runLane(lane) }
        }
    }

    private func takePendingProbation() {
        let tps = probationPending.withLock { pending in
            defer { pending = [] }
            hasProbationPending.store(false, ordering: .relaxed)
            return pending
        }
        probation.enter(tps.filter(mayStoreOffset), records: config.probationRecords, duration: config.probationDuration)
    }

    /// The one lane of all records on probation; the NUL keeps it apart from any handler's lane keys.
    static let probationLane = "\u{0}probation"

    private func runLane(_ lane: String) async {
        let marked = lane == Self.probationLane
        while let record = nextRecord(lane) {
            let finished = await Spans.consuming(record) { marked ? await processMarked(record) : await process(record) }
            complete(record, finished: finished)
            if marked { releaseHeld(probation.completed(record.topicPartition, offset: record.offset)) }
        }
    }

    /// Probation over: the records held back go to their key lanes, in arrival order.
    private func releaseHeld(_ records: [KafkaRecord]) {
        guard !stopping else { return }
        for r in records { enqueue(r, lane: handler.laneKey(for: r)) }
    }

    private func nextRecord(_ lane: String) -> KafkaRecord? {
        guard !stopping, var queue = lanes[lane], !queue.isEmpty else {
            lanes[lane] = nil
            running[lane] = nil
            notifyIdle()
            return nil
        }
        let r = queue.removeFirst()
        lanes[lane] = queue
        active[r.topicPartition, default: 0] += 1
        runningSince[RecordID(r)] = .now
        return r
    }

    /// Before a retry: false when shutting down (give up), else notes the retry as progress.
    private func mayRetry(_ record: KafkaRecord) -> Bool {
        guard !stopping else { return false }
        runningSince[RecordID(record)] = .now
        return true
    }

    /// Handles and answers one record, retrying outages. False when it gave up (shutting down).
    /// Outputs go out one at a time, reply first, and a retry resends only what was not
    /// acknowledged, so an outage between the reply and its dead-letter copy never doubles the reply.
    private nonisolated func process(_ record: KafkaRecord, poisoned: Bool = false) async -> Bool {
        var backoff = config.backoff
        var outputs: [KafkaOutgoingRecord]? = poisoned ? handler.poisoned(record) : nil
        var sent = 0
        var fellBack = false
        while true {
            do {
                if outputs == nil {
                    do {
                        let parent = record.header("traceparent")?.stringValue
                        outputs = try await TraceContext.$traceparent.withValue(parent) { try await handler.handle(record) }
                    } catch where !handler.isRetriable(error) {
                        Spans.noteFailure(error)
                        outputs = handler.failure(record, error: error)
                    }
                }
                while let all = outputs, sent < all.count {
                    do {
                        try await effects.send([all[sent]])
                        sent += 1
                    } catch where !handler.isRetriable(error, sending: all[sent]) {
                        // The broker refuses this record for good (e.g. too large).
                        if sent == 0 && !fellBack {
                            fellBack = true  // the reply itself: answer with a small reply on the default topic instead
                            outputs = handler.undeliverable(record, error: error)
                        } else {
                            logger.error("dropping an output the broker refuses: \(error)", metadata: record.logMetadata)
                            sent += 1
                        }
                    }
                }
                return true
            } catch {
                if await !mayRetry(record) { return false }
                logger.warning("retrying in \(backoff.current): \(error)", metadata: record.logMetadata)
                await backoff.wait()
            }
        }
    }

    /// A probation record: marked in progress before it is handled, the mark cleared once its
    /// answer was acknowledged. Marker I/O is retried like any outage; a marker that cannot be
    /// written for good (a bug, not an outage) is logged and the record handled without it.
    private nonisolated func processMarked(_ record: KafkaRecord) async -> Bool {
        guard let crashGuard else { return await process(record) }
        let tp = record.topicPartition
        let before: Int
        switch await retryingOutages(record, "in-progress marker", { try await crashGuard.markInProgress(tp, record.offset) }) {
        case .done(let n): before = n
        case .failed(let error):
            logger.error("in-progress marker failed; handling the record without it: \(error)", metadata: record.logMetadata)
            return await process(record)
        case .stopped: return false
        }
        let poisoned = before >= config.poisonAfter
        if poisoned {
            logger.error(
                "record was in progress at \(before) unclean exits: answering it as poisoned, not handling it",
                metadata: record.logMetadata)
        }
        guard await process(record, poisoned: poisoned) else {
            // Given up because the service stops: no crash, so the next owner must not count it.
            try? await crashGuard.clearInProgress(tp, record.offset)
            return false
        }
        // Answered (its offset is stored next): a marker left behind only counts if the record
        // comes again, so a failure here is logged, not fatal.
        if case .failed(let error) = await retryingOutages(record, "in-progress marker", { try await crashGuard.clearInProgress(tp, record.offset) }) {
            logger.error("in-progress marker could not be cleared: \(error)", metadata: record.logMetadata)
        }
        return true
    }

    private enum Retried<T: Sendable>: Sendable {
        case done(T)
        /// Not an outage: retrying cannot help.
        case failed(any Error)
        /// The service stops.
        case stopped
    }

    /// Runs `body` until it succeeds, waiting out outages (retriable errors) with the dispatcher's
    /// backoff, as a record's own handling does.
    private nonisolated func retryingOutages<T: Sendable>(
        _ record: KafkaRecord, _ what: String, _ body: @Sendable () async throws -> T
    ) async -> Retried<T> {
        var backoff = config.backoff
        while true {
            do { return .done(try await body()) } catch where !handler.isRetriable(error) {
                return .failed(error)
            } catch {
                if await !mayRetry(record) { return .stopped }
                logger.warning("\(what): retrying in \(backoff.current): \(error)", metadata: record.logMetadata)
                await backoff.wait()
            }
        }
    }

    private func complete(_ record: KafkaRecord, finished: Bool) {
        let tp = record.topicPartition
        active[tp, default: 1] -= 1
        if active[tp] == 0 { active[tp] = nil }
        runningSince[RecordID(record)] = nil
        completedRecords &+= 1
        if finished, let next = tracker.finish(tp, record.offset), mayStoreOffset(tp) {
            effects.storeOffset(tp, next)
        } else if !finished {
            tracker.discard(tp, record.offset)
        }
        // The last running record of a partition given up: nothing of it is tracked any more.
        if active[tp] == nil, !mayStoreOffset(tp) { tracker.forget(tp) }
        resumeIfDrained()
        notifyIdle()
    }

    private func dropQueued(_ tps: Set<TopicPartition>) {
        let (dropped, released) = probation.leave(tps)
        for r in dropped { tracker.discard(r.topicPartition, r.offset) }
        releaseHeld(released)
        for (lane, queue) in lanes {
            var keep: [KafkaRecord] = []
            for r in queue {
                if tps.contains(r.topicPartition) { tracker.discard(r.topicPartition, r.offset) } else { keep.append(r) }
            }
            lanes[lane] = keep
        }
        for tp in tps where active[tp] == nil { tracker.forget(tp) }
        resumeIfDrained()
    }

    /// Partitions given up: their offsets start afresh if they come back.
    private func forget(_ tps: Set<TopicPartition>) {
        for tp in tps where active[tp] == nil { tracker.forget(tp) }
        resumeIfDrained()
    }

    private func resumeIfDrained() {
        if paused, tracker.totalInFlight <= config.maxInFlight / 2 {
            paused = false
            effects.setPaused(ownedPartitions, false)
        }
    }

    /// Waits until no record of these partitions (all when nil) is running.
    public func waitIdle(_ tps: Set<TopicPartition>? = nil) async {
        if isIdle(tps) { return }
        await withCheckedContinuation { idleWaiters.append((tps, $0)) }
    }

    private func isIdle(_ tps: Set<TopicPartition>?) -> Bool {
        guard let tps else { return running.isEmpty }
        return tps.allSatisfy { active[$0] == nil }
    }

    private func notifyIdle() {
        let ready = idleWaiters.filter { isIdle($0.0) }
        idleWaiters.removeAll { isIdle($0.0) }
        ready.forEach { $0.1.resume() }
    }

    /// Graceful stop: take nothing new, drop what has not started, let running records finish.
    public func drain() async {
        stopping = true
        for lane in lanes.keys { lanes[lane] = [] }
        probation.removeAll()
        await waitIdle(nil)
    }

    public var inFlightCount: Int { tracker.totalInFlight }

    /// What the health check reads (`Liveness`).
    public struct Progress: Sendable, Equatable {
        /// Records accepted and not finished (queued ones included).
        public var inFlight: Int
        /// Records finished since start (answered, or given up at shutdown).
        public var completed: UInt64
        /// Since when the longest-stuck running record has neither finished nor begun a retry;
        /// nil when none runs.
        public var stuckSince: ContinuousClock.Instant?
        public init(inFlight: Int = 0, completed: UInt64 = 0, stuckSince: ContinuousClock.Instant? = nil) {
            self.inFlight = inFlight
            self.completed = completed
            self.stuckSince = stuckSince
        }
    }

    public var progress: Progress {
        Progress(inFlight: tracker.totalInFlight, completed: completedRecords, stuckSince: runningSince.values.min())
    }

    private struct RecordID: Hashable {
        let tp: TopicPartition
        let offset: Int64
        init(_ r: KafkaRecord) {
            tp = r.topicPartition
            offset = r.offset
        }
    }
}

/// A counting semaphore for the poll thread (never used on the cooperative pool).
final class Semaphore: Sendable {
    private let state = Mutex<Int>(0)
    private let condition = ConditionBox()
    func signal() {
        condition.lock()
        state.withLock { $0 += 1 }
        condition.signal()
        condition.unlock()
    }
    func wait(timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        condition.lock()
        defer { condition.unlock() }
        while state.withLock({ $0 }) == 0 {
            let left = deadline - ContinuousClock.now
            if left <= .zero { return false }
            _ = condition.wait(seconds: Double(left.components.seconds) + Double(left.components.attoseconds) / 1e18)
        }
        state.withLock { $0 -= 1 }
        return true
    }
}

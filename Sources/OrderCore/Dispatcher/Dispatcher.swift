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
///
/// No actor: the decisions are one value (`State`) in one `Mutex`, each step returning what to do
/// outside the lock (start a lane task, reconcile pauses, resume idle waiters, wake a revoke), so
/// `offer` is synchronous (the group consumer calls it on its poll thread for each record, as its
/// push sink), a lane task takes its records without hopping executors, and a record is completed
/// from its last output's delivery report, on the thread that brings it (`Delivery`).
public final class Dispatcher: Sendable {
    typealias IdleWaiter = CheckedContinuation<Void, Never>

    public struct Configuration: Sendable {
        /// Records accepted but not finished before fetching pauses. Default 2,000.
        public var maxInFlight: Int = 2_000
        /// The same bound in payload bytes (key, value, headers), whichever comes first: 2,000
        /// records near the broker's record size limit would be gigabytes. Default 64 MiB.
        public var maxInFlightBytes: Int = 64 << 20
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
        /// Tells a send's outcome: nil once the broker acknowledged the record, else the error.
        public typealias Delivered = @Sendable ((any Error)?) -> Void
        /// Sends one record without waiting; calls `done` exactly once: from the thread that
        /// brings the delivery report (the producer's poll thread), or at once with an enqueue
        /// error. Must not block. `done` may send the record's next output and complete the
        /// record (the offset stored, the lane's next record started), so no task has to resume
        /// for that bookkeeping.
        public var deliver: @Sendable (KafkaOutgoingRecord, @escaping Delivered) -> Void
        /// Makes the offset committable (the consumer's `store`); only for partitions owned.
        /// Called under the dispatcher's lock (stores stay in order): must not block or call
        /// back into the dispatcher.
        public var storeOffset: @Sendable (TopicPartition, Int64) -> Void
        /// Stops (true) or resumes (false) fetching these partitions: the in-flight limit. The
        /// dispatcher names the partitions it owns, and pauses newly assigned ones while the
        /// limit holds (a rebalance forgets pauses). Called outside the lock, one call at a time;
        /// also on the poll thread (from `offer` and the rebalance hooks).
        public var setPaused: @Sendable ([TopicPartition], Bool) -> Void
        public init(
            deliver: @escaping @Sendable (KafkaOutgoingRecord, @escaping Delivered) -> Void,
            storeOffset: @escaping @Sendable (TopicPartition, Int64) -> Void,
            setPaused: @escaping @Sendable ([TopicPartition], Bool) -> Void = { _, _ in }
        ) {
            self.deliver = deliver
            self.storeOffset = storeOffset
            self.setPaused = setPaused
        }

        /// With an awaiting send (given one record at a time), run in a task per record.
        public init(
            send: @escaping @Sendable ([KafkaOutgoingRecord]) async throws -> Void,
            storeOffset: @escaping @Sendable (TopicPartition, Int64) -> Void,
            setPaused: @escaping @Sendable ([TopicPartition], Bool) -> Void = { _, _ in }
        ) {
            self.init(
                deliver: { record, done in
                    Task {
                        do {
                            try await send([record])
                            done(nil)
                        } catch { done(error) }
                    }
                }, storeOffset: storeOffset, setPaused: setPaused)
        }
    }

    let handler: any RecordHandler
    let effects: Effects
    private let crashGuard: CrashGuard?
    let config: Configuration
    let logger: Logger
    /// The one lock: everything the dispatcher decides (see `State`).
    private let state: Mutex<State<IdleWaiter>>
    /// Serializes pause/resume calls into the consumer with the bookkeeping that decides them.
    private let pauseControl = Mutex(())
    /// Wakes a revoke (on the poll thread) waiting for its partitions' running records.
    private let revokeSignal = ThreadSignal()

    public init(
        handler: any RecordHandler, effects: Effects, configuration: Configuration = Configuration(), crashGuard: CrashGuard? = nil,
        logger: Logger
    ) {
        self.handler = handler
        self.effects = effects
        self.crashGuard = crashGuard
        self.config = configuration
        self.logger = logger
        state = Mutex(State(configuration: configuration, laneKey: { handler.laneKey(for: $0) }))
    }

    // MARK: Rebalance hooks (called from the consumer's poll thread)

    public func partitionsAssigned(_ tps: [TopicPartition]) {
        var probation = false
        if let crashGuard, config.probationRecords > 0, !tps.isEmpty, crashGuard.recentUncleanExit() {
            logger.warning("an instance of the group exited uncleanly: partitions start on probation", metadata: [
                "partitions": "\(tps.map(\.description).sorted())", "probation.records": "\(config.probationRecords)",
            ])
            probation = true
        }
        perform(state.withLock { $0.assigned(tps, probation: probation) })
    }

    /// Blocks the calling (poll) thread until records of these partitions that already started
    /// have finished, so their offsets are stored before the partitions move. Records not yet
    /// started are dropped: the next owner gets them from the committed offset. From the start
    /// of the revoke no record of these partitions is accepted (`offer`). The group consumer
    /// pushes its records on the thread that calls this, so every record fetched before the
    /// revoke reached `offer` first: this is the revoke's only wait.
    public func partitionsRevoking(_ tps: [TopicPartition], timeout: Duration = .seconds(30)) {
        let revoked = Set(tps)
        perform(state.withLock { $0.revoking(revoked) })
        let idle = revokeSignal.wait(timeout: timeout) { state.withLock { $0.isIdle(revoked) } }
        if !idle { logger.warning("revoke: in-flight records did not finish in time") }
        perform(state.withLock { $0.revoked(revoked) })
    }

    /// Whether records of this partition are accepted now (owned and not being revoked).
    public func isOwned(_ tp: TopicPartition) -> Bool { state.withLock { $0.isOwned(tp) } }

    // MARK: Records

    /// The consumer's records: accepted when their
    /// partition is owned and not being revoked (the next owner handles the others), under the
    /// lock, so a revoke (which marks the partitions first, then drops what is queued) never
    /// misses a record accepted here. Returns at once; the record runs in its lane.
    public func offer(_ record: KafkaRecord) {
        let lane = handler.laneKey(for: record)
        let actions = state.withLock { s -> State<IdleWaiter>.Actions? in
            guard s.isOwned(record.topicPartition) else { return nil }
            return s.submit(record, lane: lane)
        }
        if let actions { perform(actions) }
    }

    /// Accepts a consumed record, owned or not (an unowned one runs but its offset is not
    /// stored). Returns at once; the record runs in its lane.
    public func submit(_ record: KafkaRecord) {
        let lane = handler.laneKey(for: record)
        perform(state.withLock { $0.submit(record, lane: lane) })
    }

    /// The one lane of all records on probation; the NUL keeps it apart from any handler's lane keys.
    static let probationLane = "\u{0}probation"

    /// A lane's task: takes its records one by one under the lock and handles each. Its outputs
    /// then go out from delivery reports (`Delivery`): the last report completes the record on
    /// the thread that brings it (the producer's poll thread) and starts the lane's next record
    /// in a task of its own (`first`), so this task ends there instead of waiting to be resumed.
    /// Probation records (rare) run whole in the task, marker I/O included.
    private func runLane(_ lane: String, first: KafkaRecord? = nil) async {
        var next = first
        if first == nil {
            var actions = State<IdleWaiter>.Actions()
            next = state.withLock { $0.nextRecord(lane, &actions) }
            perform(actions)
        }
        while let record = next {
            if lane == Self.probationLane {
                let finished = await Spans.consuming(record) { await processMarked(record) }
                next = complete(record, finished: finished, lane: lane)
                continue
            }
            let span = Spans.startConsuming(record)
            let outputs = await Spans.running(span, { await answer(record) })
            guard let outputs, !outputs.isEmpty else {  // given up, or nothing to send: done here
                span?.end()
                next = complete(record, finished: outputs != nil, lane: lane)
                continue
            }
            Delivery(self, record, outputs, context: span?.context) { finished in
                span?.end()
                if let next = self.complete(record, finished: finished, lane: lane) {
                    Task { await self.runLane(lane, first: next) }
                }
            }.start()
            return
        }
    }

    /// A record of `lane` is done (`finished`: answered and acknowledged; else given up at
    /// shutdown): its offset stored, the lane's next record taken (nil: the lane is gone).
    private func complete(_ record: KafkaRecord, finished: Bool, lane: String) -> KafkaRecord? {
        var actions = State<IdleWaiter>.Actions()
        let next = state.withLock { s in
            let (store, next) = s.complete(record, finished: finished, lane: lane, &actions)
            // Under the lock: stores of concurrent lanes stay in order, and a revoke that
            // sees the partition idle sees its offset stored (a non-blocking librdkafka call).
            if let store { effects.storeOffset(record.topicPartition, store) }
            return next
        }
        perform(actions)
        return next
    }

    /// Performs what a step of the state decided, outside the lock.
    private func perform(_ actions: State<IdleWaiter>.Actions) {
        if actions.reconcilePauses { reconcilePauses() }
        for lane in actions.startLanes { Task { await self.runLane(lane) } }
        for waiter in actions.idle { waiter.resume() }
        if actions.wakeRevoke { revokeSignal.signal() }
    }

    /// Makes the consumer's paused partitions match the state's (one caller at a time, so a
    /// pause and a resume decided in quick succession reach the consumer in that order).
    private func reconcilePauses() {
        pauseControl.withLock { _ in
            let change = state.withLock { $0.pauseChange() }
            if !change.pause.isEmpty { effects.setPaused(change.pause, true) }
            if !change.resume.isEmpty { effects.setPaused(change.resume, false) }
        }
    }

    /// Before a retry: false when shutting down (give up), else notes the retry as progress.
    func mayRetry(_ record: KafkaRecord) -> Bool { state.withLock { $0.mayRetry(record) } }

    /// Handles and answers one record, retrying outages, and waits until its outputs are
    /// delivered (`Delivery`). False when it gave up (shutting down).
    private func process(_ record: KafkaRecord, poisoned: Bool = false) async -> Bool {
        guard let outputs = await answer(record, poisoned: poisoned) else { return false }
        let context = Spans.currentContext
        return await withCheckedContinuation { (done: CheckedContinuation<Bool, Never>) in
            Delivery(self, record, outputs, context: context) { done.resume(returning: $0) }.start()
        }
    }

    /// What to send in answer to a record: the handler's outputs (outages retried with backoff),
    /// its `failure` answer when handling failed for good, or its `poisoned` answer. Nil when it
    /// gave up (shutting down).
    private func answer(_ record: KafkaRecord, poisoned: Bool = false) async -> [KafkaOutgoingRecord]? {
        if poisoned { return handler.poisoned(record) }
        var backoff = config.backoff
        while true {
            do {
                let parent = record.header("traceparent")?.stringValue
                return try await TraceContext.$traceparent.withValue(parent) { try await handler.handle(record) }
            } catch where !handler.isRetriable(error) {
                Spans.noteFailure(error)
                return handler.failure(record, error: error)
            } catch {
                if !mayRetry(record) { return nil }
                logger.warning("retrying in \(backoff.current): \(error)", metadata: record.logMetadata)
                await backoff.wait()
            }
        }
    }

    /// A probation record: marked in progress before it is handled, the mark cleared once its
    /// answer was acknowledged. Marker I/O is retried like any outage; a marker that cannot be
    /// written for good (a bug, not an outage) is logged and the record handled without it.
    private func processMarked(_ record: KafkaRecord) async -> Bool {
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
    private func retryingOutages<T: Sendable>(
        _ record: KafkaRecord, _ what: String, _ body: @Sendable () async throws -> T
    ) async -> Retried<T> {
        var backoff = config.backoff
        while true {
            do { return .done(try await body()) } catch where !handler.isRetriable(error) {
                return .failed(error)
            } catch {
                if !mayRetry(record) { return .stopped }
                logger.warning("\(what): retrying in \(backoff.current): \(error)", metadata: record.logMetadata)
                await backoff.wait()
            }
        }
    }

    /// Waits until no record of these partitions (all when nil) is running.
    public func waitIdle(_ tps: Set<TopicPartition>? = nil) async {
        if state.withLock({ $0.isIdle(tps) }) { return }
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            if !state.withLock({ $0.waitIdle(tps, waiter) }) { waiter.resume() }
        }
    }

    /// Graceful stop: take nothing new, drop what has not started, let running records finish.
    public func drain() async {
        state.withLock { $0.drain() }
        await waitIdle(nil)
    }

    public var inFlightCount: Int { state.withLock { $0.tracker.totalInFlight } }

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

    public var progress: Progress { state.withLock { $0.progress } }
}

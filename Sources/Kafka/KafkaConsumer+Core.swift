import CRdKafka
import Foundation
import Logging
import Synchronization

extension KafkaConsumer {
    /// Runs the `StateMachine` under a lock and performs what it returns: resumes readers,
    /// applies pauses in librdkafka, wakes the poll thread. Shared by the consumer, its poll
    /// thread and the rebalance callback; owns no librdkafka handle (callers pass `rk`).
    final class Core: Sendable {
        typealias Reader = CheckedContinuation<KafkaRecord?, Never>

        let mode: Mode
        let hooks: Rebalance
        let options: Options
        let logger: Logger
        private let state: Mutex<StateMachine<Reader>>
        /// Serializes pause/resume calls into librdkafka with the bookkeeping that decides them.
        private let pauseControl = Mutex(())
        /// The consumer queue, to cut the poll thread's wait short (a `rd_kafka_queue_t` reference).
        private struct QueueRef: @unchecked Sendable { let pointer: OpaquePointer }
        private let wakeQueue = Mutex<QueueRef?>(nil)
        private let pollIterations = Atomic<UInt64>(0)
        /// Wakes a revoke waiting for the record being handled (see `awaitDrain`).
        private let drainSignal = DrainSignal()

        init(mode: Mode, rebalance: Rebalance, options: Options, logger: Logger) {
            self.mode = mode
            self.hooks = rebalance
            self.options = options
            self.logger = logger
            state = Mutex(StateMachine(
                maxBuffered: options.maxBufferedRecordsPerPartition, maxBufferedBytes: options.maxBufferedBytesPerPartition,
                pushes: options.deliver != nil))
        }

        var assignment: Set<TopicPartition> { state.withLock { $0.assignment } }
        var isClosed: Bool { state.withLock { $0.isClosing } }

        /// Under the caller's lock (the consumer's poller): true once, when the poll loop should start.
        func startPolling() -> Bool { state.withLock { $0.startPolling() } }

        /// Poll thread: one more iteration of the poll loop.
        func polled() { pollIterations.wrappingAdd(1, ordering: .relaxed) }
        var pollCount: UInt64 { pollIterations.load(ordering: .relaxed) }

        /// Takes over a queue reference (nil: releases the current one).
        func setWakeQueue(_ queue: OpaquePointer?) {
            let new = queue.map(QueueRef.init)
            let old = wakeQueue.withLock { q in
                defer { q = new }
                return q
            }
            if let old { rd_kafka_queue_destroy(old.pointer) }
        }

        /// Makes the poll thread act on a request now instead of after its current poll.
        private func wakePoller() {
            wakeQueue.withLock { q in if let q { rd_kafka_queue_yield(q.pointer) } }
        }

        // MARK: Records

        /// Poll thread: pushes a record to the sink, or buffers it (or hands it to a waiting reader).
        func push(_ record: KafkaRecord, rk: OpaquePointer) {
            switch state.withLock({ $0.push(record) }) {
            case .dropped, .buffered(pauseFetching: false): break
            case .buffered(pauseFetching: true): reconcilePauses(rk)
            case .deliver(let reader): reader.resume(returning: record)
            case .sink: options.deliver?(record)
            }
        }

        /// The next record for `records`, or nil once closed (or when the reading task is cancelled).
        func next() async -> KafkaRecord? {
            let id = state.withLock { $0.makeWaiterID() }
            return await withTaskCancellationHandler {
                await withCheckedContinuation { (reader: Reader) in
                    let (action, signal) = state.withLock { s in (s.next(id, reader, cancelled: Task.isCancelled), s.drainWaiting) }
                    if signal { drainSignal.signal() }
                    switch action {
                    case .deliver(let record, let wake):
                        if wake { wakePoller() }
                        reader.resume(returning: record)
                    case .finished: reader.resume(returning: nil)
                    case .wait: break
                    }
                }
            } onCancel: {
                state.withLock { $0.cancel(id) }?.resume(returning: nil)
            }
        }

        func stored(_ tp: TopicPartition, nextOffset: Int64) {
            let signal = state.withLock { s in
                s.stored(tp, nextOffset: nextOffset)
                return s.drainWaiting
            }
            if signal { drainSignal.signal() }
        }

        /// Poll thread exited: ends `records` for every reader.
        func pollLoopExited() {
            state.withLock { $0.pollLoopExited() }.forEach { $0.resume(returning: nil) }
        }

        /// `close()`/deinit: ends `records` at once and lets a waiting revoke go.
        func beginClose() {
            state.withLock { $0.beginClose() }.forEach { $0.resume(returning: nil) }
            drainSignal.signal()
        }

        // MARK: Pauses

        func setPaused(_ tps: [TopicPartition], _ paused: Bool, onlyAssigned: Bool = false, rk: OpaquePointer) {
            let ready = state.withLock { $0.setPaused(tps, paused, onlyAssigned: onlyAssigned) }
            reconcilePauses(rk)
            for (reader, record) in ready { reader.resume(returning: record) }
            // A reader that took a record may have freed buffer space: the poll thread resumes
            // fetching. Pushing, the poll thread hands held-back records to the sink.
            if state.withLock({ $0.isReconcileRequested || $0.isFlushRequested }) { wakePoller() }
        }

        /// Poll thread, push delivery: hands the records held back while their partitions were
        /// paused to the sink, in order, after a resume. The sink may pause again meanwhile (the
        /// dispatcher's in-flight limit); what is then left waits for the next resume.
        func flushHeldBack() {
            guard let deliver = options.deliver, state.withLock({ $0.takeFlushRequest() }) else { return }
            while let record = state.withLock({ $0.popForSink() }) { deliver(record) }
        }

        func takeReconcileRequest() -> Bool { state.withLock { $0.takeReconcileRequest() } }

        /// Makes librdkafka's paused set match the state machine's.
        func reconcilePauses(_ rk: OpaquePointer) {
            pauseControl.withLock { _ in
                let change = state.withLock { $0.reconcile() }
                if !change.pause.isEmpty {
                    let err = withPartitionList(Array(change.pause)) { rd_kafka_pause_partitions(rk, $0) }
                    if err != RD_KAFKA_RESP_ERR_NO_ERROR { logger.warning("pause: \(KafkaError(err).message)") }
                }
                if !change.resume.isEmpty {
                    let err = withPartitionList(Array(change.resume)) { rd_kafka_resume_partitions(rk, $0) }
                    if err != RD_KAFKA_RESP_ERR_NO_ERROR { logger.warning("resume: \(KafkaError(err).message)") }
                }
            }
        }

        // MARK: Assignment

        /// `assign()`: a new manual assignment replaces the old one; returns the difference.
        func replaceAssignment(_ tps: Set<TopicPartition>, rk: OpaquePointer) -> StateMachine<Reader>.AssignmentChange {
            let change = state.withLock { $0.replaceAssignment(tps) }
            reconcilePauses(rk)  // resumes dropped partitions; new ones are paused after the assign
            return change
        }

        func assigned(_ tps: [TopicPartition], incremental: Bool, rk: OpaquePointer) {
            state.withLock { $0.assigned(tps, incremental: incremental) }
            reconcilePauses(rk)
        }

        func forget(_ tps: [TopicPartition], rk: OpaquePointer) {
            state.withLock { $0.forget(tps) }
            reconcilePauses(rk)
        }

        /// Drops buffered records of the revoked partitions, waits (not when lost or closing, nor
        /// when pushing) for the record being handled to be stored, then lets the application
        /// finish (`onRevoking`).
        func revoke(_ tps: [TopicPartition], lost: Bool) {
            let (closing, handOff) = state.withLock { s in
                s.revoking(tps)
                return (s.isClosing, s.needsHandOffDrain)
            }
            if !lost, !closing, handOff, options.revokeDrainTimeout > .zero { awaitDrain(tps) }
            hooks.onRevoking(tps)
        }

        /// Blocks the poll thread until the last record handed out of each partition is stored
        /// or its reader asked for the next one, the consumer closes, or the timeout passes.
        private func awaitDrain(_ tps: [TopicPartition]) {
            let deadline = ContinuousClock.now + options.revokeDrainTimeout
            drainSignal.withLock { wait in
                state.withLock { $0.drainWaiting = true }
                defer { state.withLock { $0.drainWaiting = false } }
                while true {
                    let (pending, closing) = state.withLock { ($0.undrained(tps), $0.isClosing) }
                    if pending.isEmpty || closing { return }
                    let left = deadline - ContinuousClock.now
                    if left <= .zero {
                        logger.warning("revoke: records of \(pending) still unstored after \(options.revokeDrainTimeout)")
                        return
                    }
                    wait(left)
                }
            }
        }
    }

    /// A condition variable for the poll thread (never waited on from the cooperative pool).
    final class DrainSignal: @unchecked Sendable {
        private let condition = NSCondition()

        /// Runs `body` holding the condition's lock; `body` may wait (at most the given time),
        /// which releases the lock meanwhile.
        func withLock<R>(_ body: ((Duration) -> Void) -> R) -> R {
            condition.lock()
            defer { condition.unlock() }
            return body { left in
                let seconds = left.timeInterval
                _ = self.condition.wait(until: Date(timeIntervalSinceNow: seconds))
            }
        }

        func signal() {
            condition.lock()
            condition.broadcast()
            condition.unlock()
        }
    }
}

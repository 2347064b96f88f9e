extension KafkaConsumer {
    /// Everything the consumer decides, as a value with no locks, threads or librdkafka calls:
    /// its lifecycle, the assignment, why partitions are paused, the record buffers and the
    /// readers waiting for records. Each mutating function returns what the caller must do
    /// afterwards, outside the lock (resume a reader, pause or resume partitions in librdkafka,
    /// wake the poll thread). `Waiter` is what a reader waits on (a continuation in the consumer,
    /// anything in tests).
    struct StateMachine<Waiter> {
        enum Lifecycle: Equatable {
            /// Created; no poll loop yet (nothing subscribed or assigned).
            case idle
            /// The poll thread runs.
            case polling
            /// `close()` (or deinit) began: `records` ended, the poll thread commits and leaves.
            case closing
            /// The poll thread has exited: nothing more happens.
            case closed
        }

        /// Why a partition is paused; librdkafka's pause is their union over the assignment.
        enum PauseReason: Hashable, CaseIterable {
            /// The application asked (`pause`), e.g. the dispatcher's in-flight limit.
            case application
            /// Its buffer holds `maxBuffered` records or `maxBufferedBytes`; resumed at half of both.
            case bufferFull
        }

        struct PauseChange: Equatable {
            var pause: Set<TopicPartition> = []
            var resume: Set<TopicPartition> = []
            var isEmpty: Bool { pause.isEmpty && resume.isEmpty }
        }

        /// What a new manual assignment changes for librdkafka: partitions to stop and to start.
        struct AssignmentChange: Equatable {
            var removed: Set<TopicPartition> = []
            var added: Set<TopicPartition> = []
        }

        enum PushAction {
            /// Not assigned (any more), or the consumer is closing: dropped.
            case dropped
            /// Buffered; `pauseFetching`: the buffer just filled up (reconcile the pauses).
            case buffered(pauseFetching: Bool)
            /// Hand the record to this reader.
            case deliver(Waiter)
            /// Push delivery: hand the record to the application's sink now, on the poll thread.
            case sink
        }

        enum NextAction {
            /// Hand this record to the asking reader; `wakePoller`: a pause should be lifted now.
            case deliver(KafkaRecord, wakePoller: Bool)
            /// `records` has ended.
            case finished
            /// Queued: a later `push` or `resume` delivers.
            case wait
        }

        let maxBuffered: Int
        /// Push delivery (`Options.deliver`): assigned records go straight to the sink on the poll
        /// thread, `records` yields nothing (it only ends), and a revoke needs no hand-off wait.
        /// Records of a partition the application paused wait in its buffer (and those fetched
        /// behind them too, to keep the order) until the poll thread flushes them after the resume.
        let pushes: Bool
        private(set) var lifecycle = Lifecycle.idle
        private(set) var buffers = Buffers()
        private var waiters: [(id: UInt64, waiter: Waiter)] = []
        private var lastWaiterID: UInt64 = 0
        private(set) var assignment: Set<TopicPartition> = []
        private var paused: [PauseReason: Set<TopicPartition>] = [:]
        /// Paused in librdkafka right now (as last reconciled).
        private(set) var appliedPauses: Set<TopicPartition> = []
        private var reconcileRequested = false
        /// Push delivery: a resume left buffered records deliverable; the poll thread flushes them.
        private var flushRequested = false
        /// The revoke drain (for sequential readers): records handed out since a reader last
        /// asked for the next one, and the highest next offset stored per partition.
        private var inFlight: [TopicPartition: Int64] = [:]
        private var storedNext: [TopicPartition: Int64] = [:]
        /// A revoke waits for `undrained` to empty: `stored` and `next` say when to look again.
        var drainWaiting = false

        /// Payload bytes a partition's buffer holds at most before fetching pauses (records are
        /// up to the broker's record size: a count alone would not bound the memory).
        let maxBufferedBytes: Int

        init(maxBuffered: Int, maxBufferedBytes: Int = KafkaConsumer.Options.defaultMaxBufferedBytesPerPartition, pushes: Bool = false) {
            self.maxBuffered = max(1, maxBuffered)
            self.maxBufferedBytes = max(1, maxBufferedBytes)
            self.pushes = pushes
        }

        var isClosing: Bool { lifecycle == .closing || lifecycle == .closed }
        /// `records` has ended.
        var hasEnded: Bool { isClosing }
        var waiterCount: Int { waiters.count }

        func pausedPartitions(_ reason: PauseReason) -> Set<TopicPartition> { paused[reason] ?? [] }

        // MARK: Lifecycle

        /// True when the poll thread should start now (the first subscribe or assign).
        mutating func startPolling() -> Bool {
            guard lifecycle == .idle else { return false }
            lifecycle = .polling
            return true
        }

        /// `close()`: ends `records`; returns the readers to end (resume with nil).
        mutating func beginClose() -> [Waiter] {
            if lifecycle != .closed { lifecycle = .closing }
            return endRecords()
        }

        /// The poll thread exited: returns the readers to end.
        mutating func pollLoopExited() -> [Waiter] {
            lifecycle = .closed
            return endRecords()
        }

        private mutating func endRecords() -> [Waiter] {
            buffers = Buffers()
            defer { waiters = [] }
            return waiters.map(\.waiter)
        }

        // MARK: Records

        /// Poll thread: a fetched record. Pushing, a record of a partition the application paused,
        /// or of one whose buffer still holds records, is buffered: the poll thread flushes it to
        /// the sink after the resume (`popForSink`), so the sink still sees every record before a
        /// revoke of its partition, in order.
        mutating func push(_ record: KafkaRecord) -> PushAction {
            let tp = record.topicPartition
            guard !hasEnded, assignment.contains(tp) else { return .dropped }
            if pushes, buffers.count(tp) == 0, !pausedPartitions(.application).contains(tp) { return .sink }
            if !pushes, !waiters.isEmpty, !pausedPartitions(.application).contains(tp), buffers.count(tp) == 0 {
                inFlight[tp] = record.offset
                return .deliver(waiters.removeFirst().waiter)
            }
            let held = buffers.append(record)
            if held >= maxBuffered || buffers.bytes(tp) >= maxBufferedBytes, !pausedPartitions(.bufferFull).contains(tp) {
                paused[.bufferFull, default: []].insert(tp)
                return .buffered(pauseFetching: true)
            }
            return .buffered(pauseFetching: false)
        }

        /// An id for a reader about to ask (`next`), to find it again on cancellation.
        mutating func makeWaiterID() -> UInt64 {
            lastWaiterID &+= 1
            return lastWaiterID
        }

        /// A reader asks for the next record. Asking means it is done with what it had (the drain).
        mutating func next(_ id: UInt64, _ waiter: Waiter, cancelled: Bool) -> NextAction {
            inFlight = [:]
            if !pushes, let r = popDeliverable() { return .deliver(r, wakePoller: reconcileRequested) }
            if hasEnded || cancelled { return .finished }
            waiters.append((id, waiter))
            return .wait
        }

        /// The reading task was cancelled: its reader, if still waiting (resume with nil).
        mutating func cancel(_ id: UInt64) -> Waiter? {
            guard let i = waiters.firstIndex(where: { $0.id == id }) else { return nil }
            return waiters.remove(at: i).waiter
        }

        /// The next buffered record in turn, skipping partitions the application paused.
        private mutating func popDeliverable() -> KafkaRecord? {
            guard let (record, left) = buffers.popNext(skipping: pausedPartitions(.application)) else { return nil }
            let tp = record.topicPartition
            inFlight[tp] = record.offset
            if pausedPartitions(.bufferFull).contains(tp), left <= maxBuffered / 2, buffers.bytes(tp) <= maxBufferedBytes / 2 {
                paused[.bufferFull]?.remove(tp)
                reconcileRequested = true  // the poll thread resumes fetching
            }
            return record
        }

        /// Push delivery, poll thread: the next held-back record that may go to the sink now, while
        /// a flush runs (nil: none left; the flush is over).
        mutating func popForSink() -> KafkaRecord? {
            guard pushes, !hasEnded else { return nil }
            return popDeliverable()
        }

        /// Poll thread: whether a resume left held-back records to flush (`popForSink`).
        mutating func takeFlushRequest() -> Bool {
            defer { flushRequested = false }
            return flushRequested
        }

        var isFlushRequested: Bool { flushRequested }

        /// The application stored an offset.
        mutating func stored(_ tp: TopicPartition, nextOffset: Int64) {
            storedNext[tp] = max(storedNext[tp] ?? -1, nextOffset)
        }

        // MARK: Pauses

        /// `pause`/`resume` by the application. Returns the buffered records that waiting readers
        /// can now have (after a resume); reconcile before handing them over. Pushing, a resume
        /// that left buffered records deliverable requests a flush on the poll thread instead.
        /// `onlyAssigned`: a pause applies to the assigned partitions only (`pauseAssigned`).
        mutating func setPaused(
            _ tps: some Sequence<TopicPartition>, _ isPaused: Bool, onlyAssigned: Bool = false
        ) -> [(Waiter, KafkaRecord)] {
            if isPaused {
                paused[.application, default: []].formUnion(onlyAssigned ? Set(tps).intersection(assignment) : Set(tps))
                return []
            }
            let resumed = Set(tps).intersection(pausedPartitions(.application))
            paused[.application]?.subtract(resumed)
            if pushes {
                if resumed.contains(where: { buffers.count($0) > 0 }) { flushRequested = true }
                return []
            }
            var ready: [(Waiter, KafkaRecord)] = []
            while !waiters.isEmpty, let r = popDeliverable() { ready.append((waiters.removeFirst().waiter, r)) }
            return ready
        }

        var isReconcileRequested: Bool { reconcileRequested }

        /// Poll thread: whether a reader freed buffer space, so pauses must be reconciled.
        mutating func takeReconcileRequest() -> Bool {
            defer { reconcileRequested = false }
            return reconcileRequested
        }

        /// What to pause and resume in librdkafka so that its paused set is (paused for any reason)
        /// ∩ assigned; records the result as applied. Partitions leaving the assignment are
        /// resumed so that no stale pause outlives them. Pushing, only a full buffer pauses
        /// fetching: an application pause just holds records back in the buffer, because
        /// librdkafka drops what it prefetched for a paused partition and fetches it again after
        /// the resume, and with nothing buffered to bridge that gap every pause/resume cycle of
        /// the dispatcher's in-flight limit stalled (docs/performance.md, session 6).
        mutating func reconcile() -> PauseChange {
            let reasons: [PauseReason] = pushes ? [.bufferFull] : PauseReason.allCases
            let desired = reasons.reduce(into: Set<TopicPartition>()) { $0.formUnion(pausedPartitions($1)) }.intersection(assignment)
            defer { appliedPauses = desired }
            return PauseChange(pause: desired.subtracting(appliedPauses), resume: appliedPauses.subtracting(desired))
        }

        // MARK: Assignment

        /// `assign()` (no group): the new assignment replaces the old one. Partitions in both keep
        /// their buffers and progress (librdkafka is told only the difference, see `assign`).
        @discardableResult
        mutating func replaceAssignment(_ tps: Set<TopicPartition>) -> AssignmentChange {
            let change = AssignmentChange(removed: assignment.subtracting(tps), added: tps.subtracting(assignment))
            assignment = tps
            buffers.removeAll { !tps.contains($0) }
            for reason in PauseReason.allCases { paused[reason]?.formIntersection(tps) }
            inFlight = inFlight.filter { tps.contains($0.key) }
            storedNext = storedNext.filter { tps.contains($0.key) }
            return change
        }

        /// The group assigned partitions: eager rebalances replace the assignment, cooperative
        /// ones add to it.
        mutating func assigned(_ tps: [TopicPartition], incremental: Bool) {
            if !incremental { assignment = [] }
            assignment.formUnion(tps)
            for tp in tps {
                inFlight[tp] = nil
                storedNext[tp] = nil
            }
        }

        /// Partitions are being revoked (or lost): their buffered records are dropped (their next
        /// owner reads them) and their pauses forgotten. They stay assigned until `forget`.
        mutating func revoking(_ tps: some Sequence<TopicPartition>) {
            let revoked = Set(tps)
            buffers.removeAll { revoked.contains($0) }
            for reason in PauseReason.allCases { paused[reason]?.subtract(revoked) }
        }

        /// Whether a revoke must wait for readers (`undrained`): not when pushing, because the sink
        /// took every record of the partitions on this thread before the revoke began.
        var needsHandOffDrain: Bool { !pushes }

        /// Of these partitions, those whose record handed out last is not stored yet while the
        /// reader has not asked for the next one (what a revoke waits for).
        func undrained(_ tps: [TopicPartition]) -> [TopicPartition] {
            tps.filter { tp in inFlight[tp].map { (storedNext[tp] ?? -1) <= $0 } ?? false }
        }

        /// Partitions given up: no longer assigned, nothing of them kept.
        mutating func forget(_ tps: some Sequence<TopicPartition>) {
            let forgotten = Set(tps)
            assignment.subtract(forgotten)
            buffers.removeAll { forgotten.contains($0) }
            // Also a pause that came while the revoke waited: it must not hold the partition's
            // records back if it is assigned here again.
            for reason in PauseReason.allCases { paused[reason]?.subtract(forgotten) }
            for tp in forgotten {
                inFlight[tp] = nil
                storedNext[tp] = nil
            }
        }
    }
}

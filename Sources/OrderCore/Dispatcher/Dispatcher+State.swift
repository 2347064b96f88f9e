import Kafka

extension Dispatcher {
    /// Everything the dispatcher decides, as a value with no locks, tasks or effects: ownership,
    /// the offset tracker, the lanes, what runs, probation, the in-flight pause and who waits for
    /// idleness. Lives in the dispatcher's one `Mutex`; each mutating function returns what the
    /// caller must do afterwards, outside the lock (`Actions`). `Waiter` is what `waitIdle` waits
    /// on (a continuation in the dispatcher, anything in tests).
    struct State<Waiter> {
        /// What to do after a step, outside the lock.
        struct Actions {
            /// Lanes that got their first record: start a task running each (`runLane`).
            var startLanes: [String] = []
            /// The in-flight pause flipped, or partitions arrived while it holds: reconcile the
            /// consumer's pauses (`pauseChange`).
            var reconcilePauses = false
            /// `waitIdle` callers to resume.
            var idle: [Waiter] = []
            /// A partition being revoked has no running record any more: wake the revoke.
            var wakeRevoke = false
        }

        let maxInFlight: Int
        let maxInFlightBytes: Int
        let probationRecords: Int
        let probationDuration: Duration
        /// The handler's lane key, for held probation records released to their key lanes.
        let laneKey: @Sendable (KafkaRecord) -> String

        private(set) var tracker = OffsetTracker()
        /// Queued records per lane; a lane is present exactly while a task runs it.
        private var lanes: [String: [KafkaRecord]] = [:]
        /// Records being handled right now, per partition (queued ones excluded).
        private var active: [TopicPartition: Int] = [:]
        /// When each running record started or last began a retry (the health check's view).
        private var runningSince: [RecordID: ContinuousClock.Instant] = [:]
        private(set) var completedRecords: UInt64 = 0
        /// The in-flight limit holds (fetching should be paused).
        private(set) var paused = false
        /// The partitions the consumer was told to pause (as last reconciled).
        private var appliedPauses: Set<TopicPartition> = []
        private(set) var stopping = false
        private var idleWaiters: [(tps: Set<TopicPartition>?, waiter: Waiter)] = []
        /// Partitions currently owned, and those being given up. Records of partitions not owned
        /// or being revoked are not accepted (their next owner handles them); offsets of owned
        /// ones (also while revoking) are stored.
        private(set) var owned: Set<TopicPartition> = []
        private(set) var revoking: Set<TopicPartition> = []
        private var probation = Probation()
        /// Partitions assigned after a recent unclean exit, taken into `probation` at the next record.
        private var probationPending: Set<TopicPartition> = []

        init(configuration: Configuration, laneKey: @escaping @Sendable (KafkaRecord) -> String) {
            maxInFlight = configuration.maxInFlight
            maxInFlightBytes = max(1, configuration.maxInFlightBytes)
            probationRecords = configuration.probationRecords
            probationDuration = configuration.probationDuration
            self.laneKey = laneKey
        }

        // MARK: Ownership

        func isOwned(_ tp: TopicPartition) -> Bool { owned.contains(tp) && !revoking.contains(tp) }

        /// Offsets are stored for owned partitions, also while they are being revoked.
        func mayStoreOffset(_ tp: TopicPartition) -> Bool { owned.contains(tp) }

        /// Partitions assigned (`probation`: after a recent unclean exit in the group). While the
        /// in-flight limit holds they are paused on arrival (a rebalance forgets pauses).
        mutating func assigned(_ tps: [TopicPartition], probation: Bool) -> Actions {
            owned.formUnion(tps)
            if probation { probationPending.formUnion(tps) }
            var actions = Actions()
            actions.reconcilePauses = paused
            return actions
        }

        /// A revoke begins: no more records of these partitions are accepted, queued ones are
        /// dropped (the next owner reads them from the committed offset).
        mutating func revoking(_ tps: Set<TopicPartition>) -> Actions {
            revoking.formUnion(tps)
            probationPending.subtract(tps)
            var actions = Actions()
            let (dropped, released) = probation.leave(tps)
            for r in dropped { tracker.discard(r.topicPartition, r.offset) }
            releaseHeld(released, &actions)
            for (lane, queue) in lanes where queue.contains(where: { tps.contains($0.topicPartition) }) {
                var keep: [KafkaRecord] = []
                for r in queue {
                    if tps.contains(r.topicPartition) { tracker.discard(r.topicPartition, r.offset) } else { keep.append(r) }
                }
                lanes[lane] = keep
            }
            for tp in tps where active[tp] == nil { tracker.forget(tp) }
            resumeIfDrained(&actions)
            return actions
        }

        /// The revoke ends (its running records finished, or it gave up waiting): the partitions
        /// are no longer owned; their offsets start afresh if they come back.
        mutating func revoked(_ tps: Set<TopicPartition>) -> Actions {
            owned.subtract(tps)
            revoking.subtract(tps)
            appliedPauses.subtract(tps)  // the consumer forgets the pauses of revoked partitions
            for tp in tps where active[tp] == nil { tracker.forget(tp) }
            var actions = Actions()
            resumeIfDrained(&actions)
            return actions
        }

        /// What to pause and resume in the consumer so that the partitions it pauses are the
        /// owned ones exactly while the limit holds; records the result as applied.
        mutating func pauseChange() -> (pause: [TopicPartition], resume: [TopicPartition]) {
            let desired = paused ? owned : []
            defer { appliedPauses = desired }
            return (Array(desired.subtracting(appliedPauses)), Array(appliedPauses.subtracting(desired)))
        }

        // MARK: Records

        /// Accepts a consumed record for `lane` (its key lane), owned or not; nothing when stopping.
        mutating func submit(_ record: KafkaRecord, lane: String, now: @autoclosure () -> ContinuousClock.Instant = .now) -> Actions {
            var actions = Actions()
            guard !stopping else { return actions }
            tracker.begin(record.topicPartition, record.offset, bytes: record.payloadBytes)
            if !probationPending.isEmpty {
                probation.enter(probationPending.filter(mayStoreOffset), records: probationRecords, duration: probationDuration, now: now())
                probationPending = []
            }
            if probation.isEmpty {
                enqueue(record, lane: lane, &actions)
            } else {
                switch probation.route(record, now: now()) {
                case .normal: enqueue(record, lane: lane, &actions)
                case .probation: enqueue(record, lane: Dispatcher.probationLane, &actions)
                case .held: break
                }
            }
            if !paused, tracker.totalInFlight >= maxInFlight || tracker.totalBytesInFlight >= maxInFlightBytes {
                paused = true
                actions.reconcilePauses = true
            }
            return actions
        }

        private mutating func enqueue(_ record: KafkaRecord, lane: String, _ actions: inout Actions) {
            if lanes[lane]?.append(record) == nil {
                lanes[lane] = [record]
                actions.startLanes.append(lane)
            }
        }

        /// Probation over: the records held back go to their key lanes, in arrival order.
        private mutating func releaseHeld(_ records: [KafkaRecord], _ actions: inout Actions) {
            guard !stopping else { return }
            for r in records { enqueue(r, lane: laneKey(r), &actions) }
        }

        /// A lane task asks for its next record; nil ends the task (the lane is gone).
        mutating func nextRecord(_ lane: String, _ actions: inout Actions, now: ContinuousClock.Instant = .now) -> KafkaRecord? {
            guard !stopping, var queue = lanes[lane], !queue.isEmpty else {
                lanes[lane] = nil
                notifyIdle(&actions)
                return nil
            }
            let r = queue.removeFirst()
            lanes[lane] = queue
            active[r.topicPartition, default: 0] += 1
            runningSince[RecordID(r)] = now
            return r
        }

        /// Before a retry: false when shutting down (give up), else notes the retry as progress.
        mutating func mayRetry(_ record: KafkaRecord, now: ContinuousClock.Instant = .now) -> Bool {
            guard !stopping else { return false }
            runningSince[RecordID(record)] = now
            return true
        }

        /// A record of `lane` is done (`finished`: answered; else given up at shutdown). Returns
        /// the offset to store now (its partition owned; store it before the lock is released, so
        /// stores stay in order and a revoke that sees the partition idle sees its offset stored)
        /// and the lane's next record.
        mutating func complete(
            _ record: KafkaRecord, finished: Bool, lane: String, _ actions: inout Actions
        ) -> (store: Int64?, next: KafkaRecord?) {
            let tp = record.topicPartition
            active[tp, default: 1] -= 1
            if active[tp] == 0 { active[tp] = nil }
            runningSince[RecordID(record)] = nil
            completedRecords &+= 1
            var store: Int64?
            if finished {
                if let next = tracker.finish(tp, record.offset), mayStoreOffset(tp) { store = next }
            } else {
                tracker.discard(tp, record.offset)
            }
            if active[tp] == nil {
                // The last running record of a partition given up: nothing of it is tracked any more.
                if !mayStoreOffset(tp) { tracker.forget(tp) }
                if revoking.contains(tp) { actions.wakeRevoke = true }
            }
            resumeIfDrained(&actions)
            if lane == Dispatcher.probationLane { releaseHeld(probation.completed(tp, offset: record.offset), &actions) }
            let next = nextRecord(lane, &actions)
            if next != nil { notifyIdle(&actions) }  // else nextRecord did
            return (store, next)
        }

        private mutating func resumeIfDrained(_ actions: inout Actions) {
            if paused, tracker.totalInFlight <= maxInFlight / 2, tracker.totalBytesInFlight <= maxInFlightBytes / 2 {
                paused = false
                actions.reconcilePauses = true
            }
        }

        /// Graceful stop: take nothing new, drop what has not started (running records finish).
        mutating func drain() {
            stopping = true
            for lane in lanes.keys { lanes[lane] = [] }
            probation.removeAll()
        }

        // MARK: Idleness

        /// No record of these partitions (all when nil: no lane) is running.
        func isIdle(_ tps: Set<TopicPartition>?) -> Bool {
            guard let tps else { return lanes.isEmpty }
            return tps.allSatisfy { active[$0] == nil }
        }

        /// `waitIdle`: false when already idle (resume the waiter at once), else it waits.
        mutating func waitIdle(_ tps: Set<TopicPartition>?, _ waiter: Waiter) -> Bool {
            if isIdle(tps) { return false }
            idleWaiters.append((tps, waiter))
            return true
        }

        private mutating func notifyIdle(_ actions: inout Actions) {
            guard !idleWaiters.isEmpty else { return }
            var waiting: [(tps: Set<TopicPartition>?, waiter: Waiter)] = []
            for w in idleWaiters {
                if isIdle(w.tps) { actions.idle.append(w.waiter) } else { waiting.append(w) }
            }
            idleWaiters = waiting
        }

        // MARK: Health

        var progress: Progress {
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
}

extension Dispatcher.State.Actions: Sendable where Waiter: Sendable {}

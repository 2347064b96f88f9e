import CRdKafka
import Foundation
import Logging
import Synchronization

/// A consumer: either a member of a consumer group (`subscribe`) or a group-less reader of chosen
/// partitions (`assign`). Records arrive on `records`; a dedicated thread runs librdkafka's poll
/// loop, which also serves rebalances. Offsets are never committed for records the application
/// has not stored with `store(_:nextOffset:)`.
///
/// Records wait in a bounded per-partition buffer until the application takes them; a partition
/// whose buffer is full stops fetching until the application catches up. On a revoke, buffered
/// records of the revoked partitions are dropped (their next owner reads them), and the revoke
/// waits (up to `Options.revokeDrainTimeout`) for the record a reader is handling — taken, not
/// yet stored, and the reader has not asked for the next one — so a sequential
/// `for await … { handle; store }` loop loses and repeats nothing. Readers that hand records to
/// concurrent workers drain those in `Rebalance.onRevoking`.
public final class KafkaConsumer: Sendable {
    public struct Rebalance: Sendable {
        /// Called on the poll thread after partitions were assigned.
        public var onAssigned: @Sendable ([TopicPartition]) -> Void
        /// Called on the poll thread before partitions are given up. It may block (for example to
        /// let in-flight records of those partitions finish and store their offsets); stored
        /// offsets are committed right after it returns.
        public var onRevoking: @Sendable ([TopicPartition]) -> Void
        public init(
            onAssigned: @escaping @Sendable ([TopicPartition]) -> Void = { _ in },
            onRevoking: @escaping @Sendable ([TopicPartition]) -> Void = { _ in }
        ) {
            self.onAssigned = onAssigned
            self.onRevoking = onRevoking
        }
    }

    /// The Swift side of the consumer.
    public struct Options: Sendable {
        /// Fetched records not yet taken from `records`, per partition. At this many the
        /// partition stops fetching until half of them were taken (bounded memory). librdkafka
        /// may take up to a second to fetch again, so keep this well above a second's worth.
        public var maxBufferedRecordsPerPartition: Int
        /// On a rebalance, how long to wait for the record being handled (see above) to be stored,
        /// before `onRevoking`, the commit and giving the partitions up. `.zero` does not wait.
        /// `close()` never waits: stop handling records first.
        public var revokeDrainTimeout: Duration
        /// librdkafka's statistics JSON, every `statistics.interval.ms` (set that property to
        /// enable it); called on a librdkafka thread: keep it short.
        public var onStatistics: (@Sendable (String) -> Void)?

        public init(
            maxBufferedRecordsPerPartition: Int = 2_000, revokeDrainTimeout: Duration = .seconds(10),
            onStatistics: (@Sendable (String) -> Void)? = nil
        ) {
            self.maxBufferedRecordsPerPartition = max(1, maxBufferedRecordsPerPartition)
            self.revokeDrainTimeout = revokeDrainTimeout
            self.onStatistics = onStatistics
        }
    }

    private let client: RdKafkaClient
    private let core: ConsumerCore
    private let poller = Mutex<PollThread?>(nil)
    private let subscription = Mutex<[String]>([])
    /// Ends when the consumer is closed. Cancelling the task that iterates it ends it as well.
    public let records: AsyncStream<KafkaRecord>
    public let logger: Logger

    /// Without `group.id` the consumer can only `assign`; it then gets a private group id (needed
    /// by librdkafka's assign) and commits nothing automatically.
    public init(
        configuration: KafkaConfiguration, rebalance: Rebalance = Rebalance(), options: Options = Options(),
        logger: Logger
    ) throws {
        var config = KafkaConfiguration.consumerDefaults.merging(configuration)
        let grouped = config["group.id"] != nil
        if !grouped {
            config["group.id"] = "kafka-swift-assign-\(UUID().uuidString.lowercased())"
            config["enable.auto.commit"] = "false"
        }
        let core = ConsumerCore(rebalance: rebalance, options: options, grouped: grouped, logger: logger)
        let callbacks = RdKafkaCallbacks(logger: logger, rebalance: grouped ? core : nil, onStatistics: options.onStatistics)
        client = try RdKafkaClient(kind: RD_KAFKA_CONSUMER, configuration: config, callbacks: callbacks) { conf in
            if grouped { rd_kafka_conf_set_rebalance_cb(conf, kafkaRebalanceCallback) }
        }
        rd_kafka_poll_set_consumer(client.handle)
        self.core = core
        self.logger = logger
        records = AsyncStream(unfolding: { await core.next() })
    }

    /// Joins the consumer group and subscribes to the topics; starts the poll loop.
    public func subscribe(_ topics: [String]) throws {
        guard core.grouped else { throw KafkaError.configuration("subscribe needs group.id; use assign without a group") }
        guard !core.isClosed else { throw KafkaError.closed("consumer") }
        let err = withPartitionList(topics.map { TopicPartition($0, RD_KAFKA_PARTITION_UA) }) {
            rd_kafka_subscribe(client.handle, $0)
        }
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err, context: "subscribe \(topics)") }
        subscription.withLock { $0 = topics }
        startPolling()
    }

    /// Subscribes again to the same topics, so that the consumer rejoins its group and the group
    /// rebalances with fresh metadata (for example after the subscribed topics were re-created
    /// and the group settled on an assignment computed while they did not exist).
    public func resubscribe() throws {
        let topics = subscription.withLock { $0 }
        guard !topics.isEmpty else { return }
        try subscribe(topics)
    }

    /// Reads exactly these partitions from these offsets (`KafkaOffset`), outside any group (no
    /// rebalances). Replaces a previous assignment.
    public func assign(_ partitions: [TopicPartition: Int64]) throws {
        guard !core.isClosed else { throw KafkaError.closed("consumer") }
        let tps = Array(partitions.keys)
        // Accept records of the new partitions before librdkafka can deliver any.
        core.replaceAssignment(Set(tps), rk: client.handle)
        let err = withPartitionList(tps, offsets: tps.map { partitions[$0]! }) { rd_kafka_assign(client.handle, $0) }
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err, context: "assign") }
        core.reconcilePauses(client.handle)
        startPolling()
    }

    private func startPolling() {
        poller.withLock { poller in
            guard poller == nil, !core.isClosed else { return }
            let client = self.client
            let core = self.core
            let logger = self.logger
            poller = PollThread(name: "kafka-consumer-poll") { thread in
                let rk = client.handle
                core.setWakeQueue(rd_kafka_queue_get_consumer(rk))
                while !thread.isStopRequested {
                    core.polled()
                    if core.takeReconcileRequest() { core.reconcilePauses(rk) }
                    guard let msg = rd_kafka_consumer_poll(rk, 50) else { continue }
                    defer { rd_kafka_message_destroy(msg) }
                    let err = msg.pointee.err
                    if err != RD_KAFKA_RESP_ERR_NO_ERROR {
                        if err != RD_KAFKA_RESP_ERR__PARTITION_EOF { logger.warning("consumer: \(KafkaError(err).message)") }
                        continue
                    }
                    if core.push(KafkaRecord(copying: msg)) { core.reconcilePauses(rk) }
                }
                // Leaving: commit what the application stored, then leave the group cleanly
                // (consumer_close serves the final revoke and sends LeaveGroup).
                if core.grouped { _ = rd_kafka_commit(rk, nil, 0) }
                _ = rd_kafka_consumer_close(rk)
                core.setWakeQueue(nil)  // before rd_kafka_destroy, which waits for queue references
            } onExit: {
                core.finish()
            }
        }
    }

    /// Marks a record as done: its next offset becomes committable (committed in the background
    /// every `auto.commit.interval.ms`, by `commit()`, on revoke and on close).
    public func store(_ tp: TopicPartition, nextOffset: Int64) throws {
        let err = withPartitionList([tp], offsets: [nextOffset]) { rd_kafka_offsets_store(client.handle, $0) }
        // A partition revoked meanwhile cannot be stored; its new owner reprocesses (idempotently).
        if err == RD_KAFKA_RESP_ERR__STATE || err == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION { return }
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err, context: "store offset \(tp)@\(nextOffset)") }
        core.stored(tp, nextOffset: nextOffset)
    }

    /// Commits the stored offsets now and waits for the broker's answer.
    public func commit() async throws {
        let client = self.client
        let err = try await runBlocking { rd_kafka_commit(client.handle, nil, 0) }
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR || err == RD_KAFKA_RESP_ERR__NO_OFFSET else {
            throw KafkaError(err, context: "commit")
        }
    }

    /// The committed offsets of these partitions (next offset to read; -1001 when none).
    public func committed(_ tps: [TopicPartition], timeoutMs: Int32 = 5_000) async throws -> [TopicPartition: Int64] {
        let client = self.client
        return try await runBlocking {
            try withPartitionList(tps) { list in
                let err = rd_kafka_committed(client.handle, list, timeoutMs)
                guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err, context: "committed") }
                var out: [TopicPartition: Int64] = [:]
                for i in 0..<Int(list.pointee.cnt) {
                    let e = list.pointee.elems[i]
                    out[TopicPartition(String(cString: e.topic), e.partition)] = e.offset
                }
                return out
            }
        }
    }

    /// Stops delivering records of these partitions, including those already fetched, until
    /// `resume`. A rebalance that revokes a partition forgets its pause.
    public func pause(_ tps: [TopicPartition]) throws {
        guard !tps.isEmpty else { return }
        core.setPaused(tps, true, rk: client.handle)
    }

    public func resume(_ tps: [TopicPartition]) throws {
        guard !tps.isEmpty else { return }
        core.setPaused(tps, false, rk: client.handle)
    }

    /// The partitions this consumer currently owns.
    public var assignment: Set<TopicPartition> { core.assignment }

    /// Iterations of the poll loop so far: a health check that sees it unchanged for long knows
    /// the poll thread is stuck (a poll returns within 50 ms; rebalance callbacks may block it
    /// longer). One relaxed atomic add per iteration.
    public var pollCount: UInt64 { core.pollCount }

    /// Low and high watermark offsets of a partition, asked of the broker.
    public func watermarks(_ tp: TopicPartition, timeoutMs: Int32 = 5_000) async throws -> (low: Int64, high: Int64) {
        let client = self.client
        return try await runBlocking {
            var low: Int64 = 0
            var high: Int64 = 0
            let err = rd_kafka_query_watermark_offsets(client.handle, tp.topic, tp.partition, &low, &high, timeoutMs)
            guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err, context: "watermarks \(tp)") }
            return (low, high)
        }
    }

    /// Cluster metadata: topic → partition count.
    public func topicPartitionCounts(timeoutMs: Int32 = 5_000) async throws -> [String: Int32] {
        let client = self.client
        return try await runBlocking { try client.metadataBlocking(timeoutMs: timeoutMs) }
    }

    /// Ends `records` at once (buffered records are dropped), stops fetching, commits stored
    /// offsets, leaves the group (the final revoke calls `onRevoking`) and returns when done.
    /// Records handed out but not stored by then are read again by the partitions' next owner.
    public func close() async {
        core.beginClose()
        let poller = poller.withLock { $0 }
        if let poller { await poller.stop() }
    }

    deinit {
        core.beginClose()
        poller.withLock { $0?.requestStop() }
    }
}

/// Record buffer, pause bookkeeping and rebalance handling, shared by the consumer, its poll
/// thread and the rebalance callback. Owns no librdkafka handle (the callbacks get `rk`).
final class ConsumerCore: RdKafkaRebalanceHandler {
    let grouped: Bool
    private let rebalanceHooks: KafkaConsumer.Rebalance
    private let options: KafkaConsumer.Options
    private let logger: Logger
    private let state = Mutex(State())
    /// Serializes pause/resume calls into librdkafka with the bookkeeping that decides them.
    private let pauseControl = Mutex(())
    /// The consumer queue, to cut the poll thread's wait short (a `rd_kafka_queue_t` reference).
    private struct QueueRef: @unchecked Sendable { let pointer: OpaquePointer }
    private let wakeQueue = Mutex<QueueRef?>(nil)
    private let pollIterations = Atomic<UInt64>(0)

    /// Fetched records not yet handed out, per partition, each partition's in offset order.
    /// Partitions take turns (round robin) rather than the oldest record going first: a broker may
    /// return one topic's whole backlog before another's (Tansu fills a fetch topic by topic), and
    /// oldest-first would make the other topic's records wait behind all of it.
    private struct Buffers {
        private var queues: [TopicPartition: Queue] = [:]
        /// The partitions in `queues`, in turn order; `next` is the one whose turn it is.
        private var ring: [TopicPartition] = []
        private var next = 0

        private struct Queue {
            var items: [KafkaRecord] = []
            var head = 0
            var count: Int { items.count - head }
            mutating func popFirst() -> KafkaRecord {
                let r = items[head]
                head += 1
                if head >= 64 && head * 2 >= items.count {
                    items.removeFirst(head)
                    head = 0
                }
                return r
            }
        }

        func count(_ tp: TopicPartition) -> Int { queues[tp]?.count ?? 0 }

        /// Appends; returns how many records the partition now holds.
        mutating func append(_ record: KafkaRecord) -> Int {
            let tp = record.topicPartition
            if queues[tp] == nil { ring.append(tp) }
            queues[tp, default: Queue()].items.append(record)
            return queues[tp]!.count
        }

        /// The next record of the next partition in turn that is not in `skipping`, and how many
        /// that partition still holds.
        mutating func popNext(skipping: Set<TopicPartition>) -> (record: KafkaRecord, left: Int)? {
            var found: Int?
            for step in ring.indices where !skipping.contains(ring[(next + step) % ring.count]) {
                found = (next + step) % ring.count
                break
            }
            guard let i = found else { return nil }
            let tp = ring[i]
            let record = queues[tp]!.popFirst()
            let left = queues[tp]!.count
            if left == 0 {
                queues[tp] = nil
                ring.remove(at: i)
                next = ring.isEmpty ? 0 : i % ring.count
            } else {
                next = (i + 1) % ring.count
            }
            return (record, left)
        }

        /// Drops the records of the partitions `drop` selects.
        mutating func removeAll(where drop: (TopicPartition) -> Bool) {
            // The partition whose turn is next keeps it: count the dropped ones before it.
            let before = ring.prefix(next).filter(drop).count
            ring.removeAll(where: drop)
            queues = queues.filter { !drop($0.key) }
            next = ring.isEmpty ? 0 : (next - before) % ring.count
        }
    }

    private struct State {
        var buffers = Buffers()
        var waiters: [(id: UInt64, continuation: CheckedContinuation<KafkaRecord?, Never>)] = []
        var nextWaiterID: UInt64 = 0
        var finished = false
        var closing = false
        var assignment: Set<TopicPartition> = []
        var userPaused: Set<TopicPartition> = []
        /// Paused by us because their buffer is full.
        var fullPaused: Set<TopicPartition> = []
        /// Paused in librdkafka right now.
        var rdPaused: Set<TopicPartition> = []
        var reconcileRequested = false
        /// Records handed out since a reader last asked for the next one: the ones a sequential
        /// reader is still handling. And the highest next offset stored per partition.
        var inFlight: [TopicPartition: Int64] = [:]
        var storedNext: [TopicPartition: Int64] = [:]
    }

    init(rebalance: KafkaConsumer.Rebalance, options: KafkaConsumer.Options, grouped: Bool, logger: Logger) {
        self.rebalanceHooks = rebalance
        self.options = options
        self.grouped = grouped
        self.logger = logger
    }

    var assignment: Set<TopicPartition> { state.withLock { $0.assignment } }
    var isClosed: Bool { state.withLock { $0.closing } }

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

    // MARK: Buffer

    /// Poll thread: buffers a record (or hands it to a waiting reader). True when the
    /// partition's buffer just filled up and fetching should pause.
    func push(_ record: KafkaRecord) -> Bool {
        let tp = record.topicPartition
        let (waiter, full) = state.withLock { s -> (CheckedContinuation<KafkaRecord?, Never>?, Bool) in
            guard !s.finished, s.assignment.contains(tp) else { return (nil, false) }
            if !s.waiters.isEmpty, !s.userPaused.contains(tp), s.buffers.count(tp) == 0 {
                s.inFlight[tp] = record.offset
                return (s.waiters.removeFirst().continuation, false)
            }
            if s.buffers.append(record) >= options.maxBufferedRecordsPerPartition, !s.fullPaused.contains(tp) {
                s.fullPaused.insert(tp)
                return (nil, true)
            }
            return (nil, false)
        }
        waiter?.resume(returning: record)
        return full
    }

    /// The next record for `records`, or nil once closed (or when the reading task is cancelled).
    func next() async -> KafkaRecord? {
        let id = state.withLock { s in
            s.nextWaiterID += 1
            return s.nextWaiterID
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (cont: CheckedContinuation<KafkaRecord?, Never>) in
                let (ready, wake) = state.withLock { s -> (KafkaRecord??, Bool) in
                    s.inFlight = [:]  // asking for more: the reader is done with what it had
                    if let r = popDeliverable(&s) { return (.some(r), s.reconcileRequested) }
                    if s.finished || Task.isCancelled { return (.some(nil), false) }
                    s.waiters.append((id, cont))
                    return (nil, false)
                }
                if wake { wakePoller() }
                if let ready { cont.resume(returning: ready) }
            }
        } onCancel: {
            let cont = state.withLock { s -> CheckedContinuation<KafkaRecord?, Never>? in
                guard let i = s.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return s.waiters.remove(at: i).continuation
            }
            cont?.resume(returning: nil)
        }
    }

    /// The next buffered record (see `Buffers`), skipping partitions the application paused.
    private func popDeliverable(_ s: inout State) -> KafkaRecord? {
        guard let (record, left) = s.buffers.popNext(skipping: s.userPaused) else { return nil }
        let tp = record.topicPartition
        s.inFlight[tp] = record.offset
        if s.fullPaused.contains(tp), left <= options.maxBufferedRecordsPerPartition / 2 {
            s.fullPaused.remove(tp)
            s.reconcileRequested = true  // the poll thread resumes fetching
        }
        return record
    }

    /// Hands buffered records to waiting readers (after a resume).
    private func serveWaiters() {
        var ready: [(CheckedContinuation<KafkaRecord?, Never>, KafkaRecord)] = []
        let wake = state.withLock { s in
            while !s.waiters.isEmpty, let r = popDeliverable(&s) { ready.append((s.waiters.removeFirst().continuation, r)) }
            return s.reconcileRequested
        }
        if wake { wakePoller() }
        for (c, r) in ready { c.resume(returning: r) }
    }

    func stored(_ tp: TopicPartition, nextOffset: Int64) {
        state.withLock { $0.storedNext[tp] = max($0.storedNext[tp] ?? -1, nextOffset) }
    }

    /// No more records: drops the buffer and ends `records` for every reader.
    func finish() {
        let waiters = state.withLock { s -> [CheckedContinuation<KafkaRecord?, Never>] in
            s.finished = true
            s.buffers = Buffers()
            defer { s.waiters = [] }
            return s.waiters.map(\.continuation)
        }
        waiters.forEach { $0.resume(returning: nil) }
    }

    func beginClose() {
        state.withLock { $0.closing = true }
        finish()
    }

    // MARK: Pausing

    func setPaused(_ tps: [TopicPartition], _ paused: Bool, rk: OpaquePointer) {
        state.withLock { s in
            if paused { s.userPaused.formUnion(tps) } else { s.userPaused.subtract(tps) }
        }
        reconcilePauses(rk)
        if !paused { serveWaiters() }
    }

    func takeReconcileRequest() -> Bool {
        state.withLock { s in
            defer { s.reconcileRequested = false }
            return s.reconcileRequested
        }
    }

    /// Makes librdkafka's paused set match (paused by the application ∪ full buffers) ∩ assigned.
    /// Partitions leaving the assignment are resumed so that no stale pause outlives them.
    func reconcilePauses(_ rk: OpaquePointer) {
        pauseControl.withLock { _ in
            let (toPause, toResume) = state.withLock { s -> (Set<TopicPartition>, Set<TopicPartition>) in
                let desired = s.userPaused.union(s.fullPaused).intersection(s.assignment)
                defer { s.rdPaused = desired }
                return (desired.subtracting(s.rdPaused), s.rdPaused.subtracting(desired))
            }
            if !toPause.isEmpty {
                let err = withPartitionList(Array(toPause)) { rd_kafka_pause_partitions(rk, $0) }
                if err != RD_KAFKA_RESP_ERR_NO_ERROR { logger.warning("pause: \(KafkaError(err).message)") }
            }
            if !toResume.isEmpty {
                let err = withPartitionList(Array(toResume)) { rd_kafka_resume_partitions(rk, $0) }
                if err != RD_KAFKA_RESP_ERR_NO_ERROR { logger.warning("resume: \(KafkaError(err).message)") }
            }
        }
    }

    // MARK: Assignment

    /// `assign()`: a new manual assignment replaces the old one.
    func replaceAssignment(_ tps: Set<TopicPartition>, rk: OpaquePointer) {
        state.withLock { s in
            s.assignment = tps
            s.buffers.removeAll { !tps.contains($0) }
            s.userPaused.formIntersection(tps)
            s.fullPaused.formIntersection(tps)
            s.inFlight = [:]
            s.storedNext = [:]
        }
        reconcilePauses(rk)  // resumes dropped partitions; new ones are paused after the assign
    }

    /// librdkafka's rebalance callback, on the poll thread: it must (un)assign.
    func rebalance(
        _ rk: OpaquePointer, _ err: rd_kafka_resp_err_t, _ partitions: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>
    ) {
        let cooperative = String(cString: rd_kafka_rebalance_protocol(rk)) == "COOPERATIVE"
        let tps = partitions.pointee.topicPartitions
        switch err {
        case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
            if cooperative {
                if let e = rd_kafka_incremental_assign(rk, partitions) {
                    logger.error("incremental assign failed: \(KafkaError(consuming: e).message)")
                }
            } else {
                let e = rd_kafka_assign(rk, partitions)
                if e != RD_KAFKA_RESP_ERR_NO_ERROR { logger.error("assign failed: \(KafkaError(e).message)") }
            }
            state.withLock { s in
                if !cooperative { s.assignment = [] }
                s.assignment.formUnion(tps)
                for tp in tps {
                    s.inFlight[tp] = nil
                    s.storedNext[tp] = nil
                }
            }
            reconcilePauses(rk)
            logger.info("partitions assigned: \(tps.map(\.description).joined(separator: ", "))")
            rebalanceHooks.onAssigned(tps)
        case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
            let lost = rd_kafka_assignment_lost(rk) != 0
            logger.info("partitions \(lost ? "lost" : "revoked"): \(tps.map(\.description).joined(separator: ", "))")
            revoke(tps, lost: lost)
            // Commit what was finished before the partitions move (lost partitions cannot commit).
            if !lost {
                let e = rd_kafka_commit(rk, nil, 0)
                if e != RD_KAFKA_RESP_ERR_NO_ERROR && e != RD_KAFKA_RESP_ERR__NO_OFFSET {
                    logger.warning("commit on revoke: \(KafkaError(e).message)")
                }
            }
            if cooperative {
                if let e = rd_kafka_incremental_unassign(rk, partitions) {
                    logger.error("incremental unassign failed: \(KafkaError(consuming: e).message)")
                }
            } else {
                _ = rd_kafka_assign(rk, nil)
            }
            forget(tps)
            reconcilePauses(rk)
        default:
            // Give everything up as lost, through the application's hook as well, so that its
            // view of what it owns matches ours (cooperative: incremental_unassign; a plain
            // assign is refused under that protocol).
            logger.error("rebalance error: \(KafkaError(err).message)")
            let owned = state.withLock { Array($0.assignment) }
            revoke(owned, lost: true)
            if cooperative, !owned.isEmpty {
                let e = withPartitionList(owned) { rd_kafka_incremental_unassign(rk, $0) }
                if let e { logger.error("incremental unassign failed: \(KafkaError(consuming: e).message)") }
            } else if !cooperative {
                _ = rd_kafka_assign(rk, nil)
            }
            forget(owned)
            reconcilePauses(rk)
        }
    }

    /// Drops buffered records of the revoked partitions, waits for the records being handled to
    /// be stored, then lets the application finish (`onRevoking`).
    private func revoke(_ tps: [TopicPartition], lost: Bool) {
        let closing = state.withLock { s in
            let revoked = Set(tps)
            s.buffers.removeAll { revoked.contains($0) }
            s.userPaused.subtract(tps)
            s.fullPaused.subtract(tps)
            return s.closing
        }
        if !lost, !closing, options.revokeDrainTimeout > .zero {
            let deadline = ContinuousClock.now + options.revokeDrainTimeout
            while true {
                let (pending, closing) = state.withLock { s in
                    (tps.filter { tp in s.inFlight[tp].map { (s.storedNext[tp] ?? -1) <= $0 } ?? false }, s.closing)
                }
                if pending.isEmpty || closing { break }
                if ContinuousClock.now >= deadline {
                    logger.warning("revoke: records of \(pending) still unstored after \(options.revokeDrainTimeout)")
                    break
                }
                Thread.sleep(forTimeInterval: 0.002)
            }
        }
        rebalanceHooks.onRevoking(tps)
    }

    private func forget(_ tps: [TopicPartition]) {
        state.withLock { s in
            s.assignment.subtract(tps)
            let forgotten = Set(tps)
            s.buffers.removeAll { forgotten.contains($0) }
            for tp in tps {
                s.inFlight[tp] = nil
                s.storedNext[tp] = nil
            }
        }
    }
}

/// librdkafka's rebalance callback: hands over to the consumer's core.
private func kafkaRebalanceCallback(
    _ rk: OpaquePointer?, _ err: rd_kafka_resp_err_t,
    _ partitions: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?, _ opaque: UnsafeMutableRawPointer?
) {
    guard let rk, let partitions, let opaque else { return }
    let callbacks = Unmanaged<RdKafkaCallbacks>.fromOpaque(opaque).takeUnretainedValue()
    if let handler = callbacks.rebalance {
        handler.rebalance(rk, err, partitions)
    } else {
        _ = rd_kafka_assign(rk, err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS ? partitions : nil)
    }
}

extension KafkaRecord {
    /// Copies everything out of a librdkafka message (which the caller then destroys).
    init(copying msg: UnsafeMutablePointer<rd_kafka_message_t>) {
        let m = msg.pointee
        let topic = m.rkt.map { String(cString: rd_kafka_topic_name($0)) } ?? ""
        let key = m.key.map { Array(UnsafeRawBufferPointer(start: $0, count: m.key_len)) }
        let value = m.payload.map { Array(UnsafeRawBufferPointer(start: $0, count: m.len)) }
        var headers: [KafkaHeader] = []
        var hdrs: OpaquePointer?
        if rd_kafka_message_headers(msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR, let hdrs {
            var idx = 0
            var name: UnsafePointer<CChar>?
            var val: UnsafeRawPointer?
            var size = 0
            while rd_kafka_header_get_all(hdrs, idx, &name, &val, &size) == RD_KAFKA_RESP_ERR_NO_ERROR {
                // Header names are meant to be UTF-8; a bad one is decoded with replacement, not dropped.
                let key = name.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: strlen($0)), as: UTF8.self) } ?? ""
                headers.append(KafkaHeader(key: key, value: val.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) }))
                idx += 1
            }
        }
        var tsType = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
        let ts = rd_kafka_message_timestamp(msg, &tsType)
        self.init(
            topic: topic, partition: m.partition, offset: m.offset, key: key, value: value, headers: headers,
            timestampMs: tsType == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? nil : ts,
            timestampType: tsType == RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME ? .logAppendTime : tsType == RD_KAFKA_TIMESTAMP_CREATE_TIME ? .createTime : .none)
    }
}

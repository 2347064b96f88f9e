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
///
/// Push delivery (`Options.deliver`): the poll thread hands each record of an assigned partition
/// to the application's sink as it is fetched, so nothing hops to another thread on the way in
/// and a revoke needs no hand-off wait (the sink saw every record first). Only records of paused
/// partitions wait in the buffers, until the poll thread hands them over after the resume.
public final class KafkaConsumer: Sendable {
    private let client: RdKafkaClient
    private let core: Core
    private let poller = Mutex<PollThread?>(nil)
    private let subscription = Mutex<[String]>([])
    /// Ends when the consumer is closed. Cancelling the task that iterates it ends it as well.
    /// With push delivery it yields nothing: it only ends.
    public let records: AsyncStream<KafkaRecord>
    public let logger: Logger
    public let mode: Mode

    /// `mode` nil: it follows `group.id` (see `Mode`). Group-less (`.assigned`), the consumer can
    /// only `assign` and commits nothing automatically; without a `group.id` it gets a private one
    /// (librdkafka's assign wants one).
    public init(
        configuration: KafkaConfiguration, mode: Mode? = nil, rebalance: Rebalance = Rebalance(),
        options: Options = Options(), logger: Logger
    ) throws {
        var config = KafkaConfiguration.consumerDefaults.merging(configuration)
        let mode = mode ?? Mode(configuration: config)
        switch mode {
        case .group(let id): config["group.id"] = id
        case .assigned:
            if config["group.id"] == nil { config["group.id"] = "kafka-swift-assign-\(UUID().uuidString.lowercased())" }
            config["enable.auto.commit"] = "false"
        }
        let core = Core(mode: mode, rebalance: rebalance, options: options, logger: logger)
        let grouped = mode != .assigned
        let callbacks = RdKafkaCallbacks(logger: logger, rebalance: grouped ? core : nil, onStatistics: options.onStatistics)
        client = try RdKafkaClient(kind: RD_KAFKA_CONSUMER, configuration: config, callbacks: callbacks) { conf in
            if grouped { rd_kafka_conf_set_rebalance_cb(conf, kafkaRebalanceCallback) }
        }
        rd_kafka_poll_set_consumer(client.handle)
        self.core = core
        self.mode = mode
        self.logger = logger
        records = AsyncStream(unfolding: { await core.next() })
    }

    /// Joins the consumer group and subscribes to the topics; starts the poll loop.
    public func subscribe(_ topics: [String]) throws {
        guard case .group = mode else { throw KafkaError.configuration("subscribe needs group.id; use assign without a group") }
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

    /// Reads exactly these partitions, outside any group (no rebalances). Replaces a previous
    /// assignment: partitions new to it start at the given offsets; partitions already assigned
    /// keep reading where they are (their offset here is not used); the others stop.
    ///
    /// librdkafka is told only the difference (incremental unassign, then assign). A whole
    /// `rd_kafka_assign` would stop and restart the kept partitions too, and a second assign while
    /// such a stop is still outstanding sends it again, whose reply aborts the process on the
    /// assertion `rktp->rktp_started` (librdkafka #5573, fixed by #5574 after 2.15; seen here in
    /// CI). Unassigning one partition, assigning it again and unassigning it again within the
    /// milliseconds its fetcher takes to stop can still meet that bug: no caller here does that.
    public func assign(_ partitions: [TopicPartition: KafkaOffset]) throws {
        guard !core.isClosed else { throw KafkaError.closed("consumer") }
        // Accept records of the new partitions before librdkafka can deliver any.
        let change = core.replaceAssignment(Set(partitions.keys), rk: client.handle)
        if !change.removed.isEmpty {
            let error = withPartitionList(Array(change.removed)) { rd_kafka_incremental_unassign(client.handle, $0) }
            if let error { throw KafkaError(consuming: error, context: "assign (unassigning \(change.removed.count) partitions)") }
        }
        let added = partitions.filter { change.added.contains($0.key) }
        if !added.isEmpty {
            let error = withPartitionList(Array(added.keys), offsets: added.values.map(\.rawValue)) {
                rd_kafka_incremental_assign(client.handle, $0)
            }
            if let error { throw KafkaError(consuming: error, context: "assign") }
        }
        core.reconcilePauses(client.handle)
        startPolling()
    }

    /// `assign` with absolute offsets (≥ 0) or librdkafka's logical ones as plain numbers.
    public func assign(_ partitions: [TopicPartition: Int64]) throws {
        try assign(partitions.mapValues(KafkaOffset.init))
    }

    private func startPolling() {
        poller.withLock { poller in
            guard core.startPolling() else { return }
            let client = self.client
            let core = self.core
            let logger = self.logger
            poller = PollThread(name: "kafka-consumer-poll") { thread in
                KafkaConsumer.pollLoop(thread, client: client, core: core, logger: logger)
            } onExit: {
                core.pollLoopExited()
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

    /// The committed offsets of these partitions (next offset to read; -1001, `KafkaOffset.invalid`,
    /// when none).
    public func committed(_ tps: [TopicPartition], timeout: Duration = .seconds(5)) async throws -> [TopicPartition: Int64] {
        let client = self.client
        let timeoutMs = timeout.rdKafkaMilliseconds
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

    /// `pause`, but only of those partitions assigned to this consumer now, in the same step (a
    /// rebalance cannot slip in between). For a pause meant for whichever consumer owns the
    /// partitions: one kept here for a partition not assigned yet would hold its records back
    /// once it is.
    public func pauseAssigned(_ tps: [TopicPartition]) throws {
        guard !tps.isEmpty else { return }
        core.setPaused(tps, true, onlyAssigned: true, rk: client.handle)
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
    public func watermarks(_ tp: TopicPartition, timeout: Duration = .seconds(5)) async throws -> (low: Int64, high: Int64) {
        let client = self.client
        let timeoutMs = timeout.rdKafkaMilliseconds
        return try await runBlocking {
            var low: Int64 = 0
            var high: Int64 = 0
            let err = rd_kafka_query_watermark_offsets(client.handle, tp.topic, tp.partition, &low, &high, timeoutMs)
            guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err, context: "watermarks \(tp)") }
            return (low, high)
        }
    }

    /// Cluster metadata: topic → partition count.
    public func topicPartitionCounts(timeout: Duration = .seconds(5)) async throws -> [String: Int32] {
        let client = self.client
        let timeoutMs = timeout.rdKafkaMilliseconds
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

import CRdKafka
import Logging
import Foundation
import Synchronization

/// A consumer: either a member of a consumer group (`subscribe`) or a group-less reader of chosen
/// partitions (`assign`). Records arrive on `records`; a dedicated thread runs librdkafka's poll
/// loop, which also serves rebalances. Offsets are never committed for records the application
/// has not stored with `store(_:)`.
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

    private let client: RdKafkaClient
    private let state = Mutex<State>(State())
    public let records: AsyncStream<KafkaRecord>
    private let recordSink: AsyncStream<KafkaRecord>.Continuation
    public let logger: Logger

    private struct State {
        var poller: PollThread?
        var assignment: Set<TopicPartition> = []
        var closed = false
    }

    public init(configuration: KafkaConfiguration, rebalance: Rebalance = Rebalance(), logger: Logger) throws {
        let config = KafkaConfiguration.consumerDefaults.merging(configuration)
        let callbacks = RdKafkaCallbacks(logger: logger)
        let client = try RdKafkaClient(kind: RD_KAFKA_CONSUMER, configuration: config, callbacks: callbacks) { conf in
            if config["group.id"] != nil { rd_kafka_conf_set_rebalance_cb(conf, kafkaRebalanceCallback) }
        }
        rd_kafka_poll_set_consumer(client.handle)
        self.client = client
        self.logger = logger
        (records, recordSink) = AsyncStream.makeStream(of: KafkaRecord.self)
        callbacks.onAssigned = { [weak self] tps in
            self?.state.withLock { $0.assignment.formUnion(tps) }
            rebalance.onAssigned(tps)
        }
        callbacks.onRevoking = { [weak self] tps in
            rebalance.onRevoking(tps)
            self?.state.withLock { $0.assignment.subtract(tps) }
        }
    }

    /// Joins the consumer group and subscribes to the topics; starts the poll loop.
    public func subscribe(_ topics: [String]) throws {
        let list = PartitionList(topics.map { TopicPartition($0, RD_KAFKA_PARTITION_UA) })
        let err = rd_kafka_subscribe(client.handle, list.pointer)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err, context: "subscribe \(topics)") }
        startPolling()
    }

    /// Reads exactly these partitions from these offsets, outside any group (no rebalances).
    public func assign(_ partitions: [TopicPartition: Int64]) throws {
        let tps = Array(partitions.keys)
        let list = PartitionList(tps, offsets: tps.map { partitions[$0]! })
        let err = rd_kafka_assign(client.handle, list.pointer)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err, context: "assign") }
        state.withLock { $0.assignment = Set(tps) }
        startPolling()
    }

    private func startPolling() {
        state.withLock { s in
            guard s.poller == nil, !s.closed else { return }
            let client = self.client
            let sink = self.recordSink
            let logger = self.logger
            s.poller = PollThread(name: "kafka-consumer-poll") { thread in
                while !thread.isStopRequested {
                    guard let msg = rd_kafka_consumer_poll(client.handle, 50) else { continue }
                    defer { rd_kafka_message_destroy(msg) }
                    let m = msg.pointee
                    if m.err != RD_KAFKA_RESP_ERR_NO_ERROR {
                        if m.err != RD_KAFKA_RESP_ERR__PARTITION_EOF {
                            logger.warning("consumer: \(KafkaError(m.err).message)")
                        }
                        continue
                    }
                    sink.yield(KafkaRecord(copying: msg))
                }
                // Leaving: commit what the application stored, then leave the group cleanly
                // (consumer_close serves the final revoke and sends LeaveGroup).
                _ = rd_kafka_commit(client.handle, nil, 0)
                _ = rd_kafka_consumer_close(client.handle)
            } onExit: {
                sink.finish()
            }
        }
    }

    /// Marks a record as done: its next offset becomes committable (committed in the background
    /// every `auto.commit.interval.ms`, on revoke and on close).
    public func store(_ tp: TopicPartition, nextOffset: Int64) throws {
        let list = PartitionList([tp], offsets: [nextOffset])
        let err = rd_kafka_offsets_store(client.handle, list.pointer)
        // A partition revoked meanwhile cannot be stored; its new owner reprocesses (idempotently).
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR || err == RD_KAFKA_RESP_ERR__STATE else {
            throw KafkaError(err, context: "store offset \(tp)@\(nextOffset)")
        }
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
            let list = PartitionList(tps)
            let err = rd_kafka_committed(client.handle, list.pointer, timeoutMs)
            guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err, context: "committed") }
            var out: [TopicPartition: Int64] = [:]
            for i in 0..<Int(list.pointer.pointee.cnt) {
                let e = list.pointer.pointee.elems[i]
                out[TopicPartition(String(cString: e.topic), e.partition)] = e.offset
            }
            return out
        }
    }

    public func pause(_ tps: [TopicPartition]) throws {
        guard !tps.isEmpty else { return }
        let list = PartitionList(tps)
        let err = rd_kafka_pause_partitions(client.handle, list.pointer)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err, context: "pause") }
    }

    public func resume(_ tps: [TopicPartition]) throws {
        guard !tps.isEmpty else { return }
        let list = PartitionList(tps)
        let err = rd_kafka_resume_partitions(client.handle, list.pointer)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err, context: "resume") }
    }

    /// The partitions this consumer currently owns.
    public var assignment: Set<TopicPartition> { state.withLock { $0.assignment } }

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

    /// Stops fetching, commits stored offsets, leaves the group, and ends `records`.
    public func close() async {
        let poller = state.withLock { s -> PollThread? in
            s.closed = true
            return s.poller
        }
        if let poller {
            await poller.stop()
        } else {
            recordSink.finish()
        }
    }

    deinit { state.withLock { $0.poller?.requestStop() } }
}

/// librdkafka's rebalance callback: it must (un)assign; the rest is handed to Swift closures.
private func kafkaRebalanceCallback(
    _ rk: OpaquePointer?, _ err: rd_kafka_resp_err_t,
    _ partitions: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?, _ opaque: UnsafeMutableRawPointer?
) {
    guard let rk, let partitions, let opaque else { return }
    let callbacks = Unmanaged<RdKafkaCallbacks>.fromOpaque(opaque).takeUnretainedValue()
    let cooperative = String(cString: rd_kafka_rebalance_protocol(rk)) == "COOPERATIVE"
    let tps = partitions.pointee.topicPartitions
    switch err {
    case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
        if cooperative {
            if let e = rd_kafka_incremental_assign(rk, partitions) {
                callbacks.logger.error("incremental assign failed: \(KafkaError(consuming: e).message)")
            }
        } else {
            let e = rd_kafka_assign(rk, partitions)
            if e != RD_KAFKA_RESP_ERR_NO_ERROR { callbacks.logger.error("assign failed: \(KafkaError(e).message)") }
        }
        callbacks.logger.info("partitions assigned: \(tps.map(\.description).joined(separator: ", "))")
        callbacks.onAssigned?(tps)
    case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
        callbacks.logger.info("partitions revoked: \(tps.map(\.description).joined(separator: ", "))")
        callbacks.onRevoking?(tps)
        // Commit what was finished before the partitions move (lost partitions cannot commit).
        if rd_kafka_assignment_lost(rk) == 0 { _ = rd_kafka_commit(rk, partitions, 0) }
        if cooperative {
            if let e = rd_kafka_incremental_unassign(rk, partitions) { _ = KafkaError(consuming: e) }
        } else {
            _ = rd_kafka_assign(rk, nil)
        }
    default:
        callbacks.logger.error("rebalance error: \(KafkaError(err).message)")
        _ = rd_kafka_assign(rk, nil)
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
            timestampMs: tsType == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? nil : ts)
    }
}

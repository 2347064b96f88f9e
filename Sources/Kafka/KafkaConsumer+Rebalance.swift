import CRdKafka

extension KafkaConsumer {
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
}

/// The eager/cooperative rebalance protocol, on the poll thread (librdkafka's rebalance callback):
/// librdkafka wants the (un)assign done here.
extension KafkaConsumer.Core: RdKafkaRebalanceHandler {
    func rebalance(
        _ rk: OpaquePointer, _ err: rd_kafka_resp_err_t, _ partitions: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>
    ) {
        // NULL "on error" (rdkafka.h): then not cooperative, never a crash in the callback.
        let cooperative = rd_kafka_rebalance_protocol(rk).map { String(cString: $0) } == "COOPERATIVE"
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
            assigned(tps, incremental: cooperative, rk: rk)
            logger.info("partitions assigned: \(tps.map(\.description).joined(separator: ", "))")
            hooks.onAssigned(tps)
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
            forget(tps, rk: rk)
        default:
            // Give everything up as lost, through the application's hook as well, so that its
            // view of what it owns matches ours (cooperative: incremental_unassign; a plain
            // assign is refused under that protocol).
            logger.error("rebalance error: \(KafkaError(err).message)")
            let owned = Array(assignment)
            revoke(owned, lost: true)
            if cooperative, !owned.isEmpty {
                let e = withPartitionList(owned) { rd_kafka_incremental_unassign(rk, $0) }
                if let e { logger.error("incremental unassign failed: \(KafkaError(consuming: e).message)") }
            } else if !cooperative {
                _ = rd_kafka_assign(rk, nil)
            }
            forget(owned, rk: rk)
        }
    }
}

/// librdkafka's rebalance callback (a C function pointer): hands over to the consumer's core.
func kafkaRebalanceCallback(
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

import CRdKafka
import Logging

extension KafkaConsumer {
    /// The poll thread's body: serves librdkafka (records, rebalances, statistics) until stopped,
    /// then commits what the application stored and leaves the group cleanly
    /// (`rd_kafka_consumer_close` serves the final revoke and sends LeaveGroup).
    static func pollLoop(_ thread: PollThread, client: RdKafkaClient, core: Core, logger: Logger) {
        let rk = client.handle
        core.setWakeQueue(rd_kafka_queue_get_consumer(rk))
        while !thread.isStopRequested {
            core.polled()
            core.flushHeldBack()
            if core.takeReconcileRequest() { core.reconcilePauses(rk) }
            guard let msg = rd_kafka_consumer_poll(rk, 50) else { continue }
            defer { rd_kafka_message_destroy(msg) }
            let err = msg.pointee.err
            if err != RD_KAFKA_RESP_ERR_NO_ERROR {
                if err != RD_KAFKA_RESP_ERR__PARTITION_EOF { logger.warning("consumer: \(KafkaError(err).message)") }
                continue
            }
            core.push(KafkaRecord(copying: msg), rk: rk)
        }
        if case .group = core.mode { _ = rd_kafka_commit(rk, nil, 0) }
        _ = rd_kafka_consumer_close(rk)
        core.setWakeQueue(nil)  // before rd_kafka_destroy, which waits for queue references
    }
}

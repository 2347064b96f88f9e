import CRdKafka
import Logging

/// Carries one in-flight record's continuation through librdkafka as the message opaque.
private final class DeliveryBox {
    let topic: String
    let continuation: CheckedContinuation<DeliveryReport, any Error>
    init(topic: String, continuation: CheckedContinuation<DeliveryReport, any Error>) {
        self.topic = topic
        self.continuation = continuation
    }
}

/// An idempotent producer (by default). Each `send` awaits the broker's acknowledgement; a
/// dedicated thread serves librdkafka's delivery reports.
public final class KafkaProducer: Sendable {
    private let client: RdKafkaClient
    private let poller: PollThread
    public let logger: Logger

    public init(configuration: KafkaConfiguration, logger: Logger) throws {
        let config = KafkaConfiguration.producerDefaults.merging(configuration)
        let client = try RdKafkaClient(
            kind: RD_KAFKA_PRODUCER, configuration: config, callbacks: RdKafkaCallbacks(logger: logger)
        ) { conf in
            rd_kafka_conf_set_dr_msg_cb(conf) { _, message, _ in
                // Thin: hand the result to the awaiting Swift task and release the box.
                guard let message, let opaque = message.pointee._private else { return }
                let box = Unmanaged<DeliveryBox>.fromOpaque(opaque).takeRetainedValue()
                let m = message.pointee
                if m.err == RD_KAFKA_RESP_ERR_NO_ERROR {
                    box.continuation.resume(returning: DeliveryReport(topic: box.topic, partition: m.partition, offset: m.offset))
                } else {
                    box.continuation.resume(throwing: KafkaError(m.err, context: "delivery to \(box.topic)"))
                }
            }
        }
        self.client = client
        self.logger = logger
        self.poller = PollThread(name: "kafka-producer-poll") { thread in
            while !thread.isStopRequested { rd_kafka_poll(client.handle, 50) }
        }
    }

    /// Produces one record and waits for its delivery report. Throws the delivery error (after
    /// librdkafka's own retries, bounded by `message.timeout.ms`).
    public func send(_ record: KafkaOutgoingRecord) async throws -> DeliveryReport {
        try await withCheckedThrowingContinuation { cont in
            let box = Unmanaged.passRetained(DeliveryBox(topic: record.topic, continuation: cont))
            if let error = enqueue(record, opaque: box.toOpaque()) {
                box.release()
                cont.resume(throwing: error)
            }
        }
    }

    /// Sends several records at once and waits for all reports (in order of the input).
    public func sendAll(_ records: [KafkaOutgoingRecord]) async throws -> [DeliveryReport] {
        try await withThrowingTaskGroup(of: (Int, DeliveryReport).self) { group in
            for (i, r) in records.enumerated() { group.addTask { (i, try await self.send(r)) } }
            var out = [DeliveryReport?](repeating: nil, count: records.count)
            for try await (i, report) in group { out[i] = report }
            return out.map { $0! }
        }
    }

    /// Enqueues with librdkafka, retrying briefly while its local queue is full.
    private func enqueue(_ record: KafkaOutgoingRecord, opaque: UnsafeMutableRawPointer) -> KafkaError? {
        var attempts = 0
        while true {
            let error = produceOnce(record, opaque: opaque)
            guard let error, error.code == RD_KAFKA_RESP_ERR__QUEUE_FULL.rawValue, attempts < 200 else { return error }
            attempts += 1
            rd_kafka_poll(client.handle, 10)  // make room: serve delivery reports
        }
    }

    private func produceOnce(_ record: KafkaOutgoingRecord, opaque: UnsafeMutableRawPointer) -> KafkaError? {
        guard let headers = rd_kafka_headers_new(record.headers.count) else {
            return KafkaError.configuration("rd_kafka_headers_new failed")
        }
        for h in record.headers {
            if let v = h.value {
                _ = v.withUnsafeBytes { rd_kafka_header_add(headers, h.key, -1, $0.baseAddress, $0.count) }
            } else {
                _ = rd_kafka_header_add(headers, h.key, -1, nil, 0)
            }
        }
        let key = record.key
        let value = record.value
        let err: OpaquePointer? = record.topic.withCString { topic in
            withOptionalBytes(key) { keyPtr, keyLen in
                withOptionalBytes(value) { valPtr, valLen in
                    var vus = [rd_kafka_vu_t](repeating: rd_kafka_vu_t(), count: 7)
                    vus[0].vtype = RD_KAFKA_VTYPE_TOPIC
                    vus[0].u.cstr = topic
                    vus[1].vtype = RD_KAFKA_VTYPE_KEY
                    vus[1].u.mem.ptr = UnsafeMutableRawPointer(mutating: keyPtr)
                    vus[1].u.mem.size = keyLen
                    vus[2].vtype = RD_KAFKA_VTYPE_VALUE
                    vus[2].u.mem.ptr = UnsafeMutableRawPointer(mutating: valPtr)
                    vus[2].u.mem.size = valLen
                    vus[3].vtype = RD_KAFKA_VTYPE_MSGFLAGS
                    vus[3].u.i = RD_KAFKA_MSG_F_COPY
                    vus[4].vtype = RD_KAFKA_VTYPE_HEADERS
                    vus[4].u.headers = headers
                    vus[5].vtype = RD_KAFKA_VTYPE_OPAQUE
                    vus[5].u.ptr = opaque
                    vus[6].vtype = RD_KAFKA_VTYPE_PARTITION
                    vus[6].u.i32 = record.partition ?? RD_KAFKA_PARTITION_UA
                    return rd_kafka_produceva(client.handle, vus, vus.count)
                }
            }
        }
        guard let err else { return nil }  // librdkafka owns the headers now
        rd_kafka_headers_destroy(headers)  // not enqueued: still ours
        return KafkaError(consuming: err, context: "produce to \(record.topic)")
    }

    /// Waits until every enqueued record is delivered or failed, up to `timeoutMs`.
    @discardableResult
    public func flush(timeoutMs: Int32 = 10_000) async -> Bool {
        let client = self.client
        let result = try? await runBlocking { rd_kafka_flush(client.handle, timeoutMs) }
        return result == RD_KAFKA_RESP_ERR_NO_ERROR
    }

    /// Flushes, then stops the delivery-report thread. Undelivered records fail their `send`.
    public func close(timeoutMs: Int32 = 10_000) async {
        if !(await flush(timeoutMs: timeoutMs)) {
            logger.warning("producer closed with undelivered records")
            rd_kafka_purge(client.handle, Int32(RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT))
            rd_kafka_poll(client.handle, 0)
        }
        await poller.stop()
    }

    /// Cluster metadata: topic → partition count.
    public func topicPartitionCounts(timeoutMs: Int32 = 5_000) async throws -> [String: Int32] {
        let client = self.client
        return try await runBlocking { try client.metadataBlocking(timeoutMs: timeoutMs) }
    }

    deinit { poller.requestStop() }
}

private let emptyByte: [UInt8] = [0]

/// Calls `body` with a pointer and length, or (nil, 0) for a null buffer (a Kafka null, not empty).
func withOptionalBytes<R>(_ bytes: [UInt8]?, _ body: (UnsafeRawPointer?, Int) -> R) -> R {
    guard let bytes else { return body(nil, 0) }
    if bytes.isEmpty { return emptyByte.withUnsafeBytes { body($0.baseAddress, 0) } }
    return bytes.withUnsafeBytes { body($0.baseAddress, $0.count) }
}

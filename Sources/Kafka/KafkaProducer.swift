import Foundation
import CRdKafka
import Logging
import Synchronization

/// What a callback send is told: the broker's acknowledgement or the send's error.
public typealias DeliveryHandler = @Sendable (Result<DeliveryReport, KafkaError>) -> Void

/// One record's delivery result, carried through librdkafka as the message opaque (retained
/// until its delivery report). Completed once; `wait()` may come before or after that. A
/// callback promise (`send(_:onDelivery:)`) instead queues its handler on `reports`, which the
/// poll thread runs once librdkafka's callback has returned.
private final class DeliveryPromise: Sendable {
    let topic: String
    private let onDelivery: (handler: DeliveryHandler, reports: ReadyReports)?
    private enum State {
        case pending(CheckedContinuation<DeliveryReport, any Error>?)
        case done(Result<DeliveryReport, KafkaError>)
    }
    private let state = Mutex(State.pending(nil))

    init(topic: String) {
        self.topic = topic
        onDelivery = nil
    }

    init(topic: String, reports: ReadyReports, onDelivery: @escaping DeliveryHandler) {
        self.topic = topic
        self.onDelivery = (onDelivery, reports)
    }

    func complete(_ result: Result<DeliveryReport, KafkaError>) {
        if let onDelivery {
            onDelivery.reports.append(onDelivery.handler, result)
            return
        }
        let waiter = state.withLock { s -> CheckedContinuation<DeliveryReport, any Error>? in
            guard case .pending(let c) = s else { return nil }
            s = .done(result)
            return c
        }
        waiter?.resume(with: result.mapError { $0 as any Error })
    }

    /// A callback promise whose record was never enqueued: its handler runs here and now.
    func fail(_ error: KafkaError) { onDelivery?.handler(.failure(error)) }

    func wait() async throws -> DeliveryReport {
        try await withCheckedThrowingContinuation { cont in
            let done = state.withLock { s -> Result<DeliveryReport, KafkaError>? in
                switch s {
                case .done(let r): return r
                case .pending: s = .pending(cont); return nil
                }
            }
            if let done { cont.resume(with: done.mapError { $0 as any Error }) }
        }
    }
}

/// Delivery handlers whose reports came, waiting for the poll thread to run them after
/// `rd_kafka_poll` returned: a handler may produce again (a record's next output), which is not
/// for librdkafka's own callback. Reports served by `flush` (another thread) wait here too.
private final class ReadyReports: Sendable {
    private let ready = Mutex<[(DeliveryHandler, Result<DeliveryReport, KafkaError>)]>([])

    func append(_ handler: @escaping DeliveryHandler, _ result: Result<DeliveryReport, KafkaError>) {
        ready.withLock { $0.append((handler, result)) }
    }

    /// Runs the handlers ready now, in report order (on the poll thread).
    func run() {
        let batch = ready.withLock { r -> [(DeliveryHandler, Result<DeliveryReport, KafkaError>)] in
            defer { r = [] }
            return r
        }
        for (handler, result) in batch { handler(result) }
    }
}

/// An idempotent producer (by default). Each `send` awaits the broker's acknowledgement; a
/// dedicated thread serves librdkafka's delivery reports. After `close()`, sends throw.
public final class KafkaProducer: Sendable {
    private let client: RdKafkaClient
    private let poller: PollThread
    /// True once closing; checked and produced under the lock so close cannot miss a record.
    private let closed = Mutex(false)
    private let reports = ReadyReports()
    public let logger: Logger

    /// `deliveryReportInterval` > 0: while records are outstanding, the poll thread serves delivery
    /// reports once per interval instead of waking for each one as it arrives. At a steady rate the
    /// reports of one interval then cost one wake-up of the thread instead of one each (measured:
    /// 0.73 → 0.23 switches of the thread per request at 1,000 requests/s, docs/performance.md), and
    /// a report is served up to one interval later. Zero (the default): served as they arrive.
    public init(configuration: KafkaConfiguration, logger: Logger, deliveryReportInterval: Duration = .zero) throws {
        let config = KafkaConfiguration.producerDefaults.merging(configuration)
        let client = try RdKafkaClient(
            kind: RD_KAFKA_PRODUCER, configuration: config, callbacks: RdKafkaCallbacks(logger: logger)
        ) { conf in
            rd_kafka_conf_set_dr_msg_cb(conf) { _, message, _ in
                // Thin: hand the result to the promise and release it.
                guard let message, let opaque = message.pointee._private else { return }
                let promise = Unmanaged<DeliveryPromise>.fromOpaque(opaque).takeRetainedValue()
                let m = message.pointee
                if m.err == RD_KAFKA_RESP_ERR_NO_ERROR {
                    promise.complete(.success(DeliveryReport(topic: promise.topic, partition: m.partition, offset: m.offset)))
                } else {
                    promise.complete(.failure(KafkaError(m.err, context: "delivery to \(promise.topic)")))
                }
            }
        }
        self.client = client
        self.logger = logger
        let reports = self.reports
        self.poller = PollThread(name: "kafka-producer-poll") { thread in
            let rk = client.handle
            let pace = deliveryReportInterval > .zero ? deliveryReportInterval.timeInterval : nil
            var paced = false
            while !thread.isStopRequested {
                // Paced while records are outstanding: one wake-up serves the reports of an interval.
                // An interval that brought none (the broker away: records wait for up to
                // `message.timeout.ms`) goes back to waiting for the next report.
                let served = rd_kafka_poll(rk, paced ? 0 : 50)
                reports.run()
                paced = pace != nil && rd_kafka_outq_len(rk) > 0 && (served > 0 || !paced)
                if paced, let pace { Thread.sleep(forTimeInterval: pace) }
            }
            // Whatever is still queued fails now (after close's flush: nothing), so that no
            // promise outlives the handle; rd_kafka_destroy would drop them silently.
            rd_kafka_purge(rk, Int32(RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT))
            let deadline = ContinuousClock.now + .seconds(5)
            repeat {
                rd_kafka_poll(rk, 10)
                reports.run()
            } while rd_kafka_outq_len(rk) > 0 && ContinuousClock.now < deadline
        }
    }

    /// Produces one record without waiting: `onDelivery` runs once, with the delivery report
    /// (after librdkafka's own retries, bounded by `message.timeout.ms`) on the poll thread, or
    /// with an enqueue error at once on the caller's thread. While librdkafka's queue is full it
    /// waits for room in a task, as `send` does. The handler must not block: it holds up every
    /// other report; it may send again.
    public func send(_ record: KafkaOutgoingRecord, onDelivery: @escaping DeliveryHandler) {
        let promise = DeliveryPromise(topic: record.topic, reports: reports, onDelivery: onDelivery)
        let opaque = Unmanaged.passRetained(promise).toOpaque()
        let error = closed.withLock { closed in
            closed ? KafkaError.closed("producer") : produceOnce(record, opaque: opaque)
        }
        guard let error else { return }
        Unmanaged<DeliveryPromise>.fromOpaque(opaque).release()  // not enqueued: no report will come
        guard error.code == RD_KAFKA_RESP_ERR__QUEUE_FULL.rawValue else { return promise.fail(error) }
        Task {
            do { try await self.enqueue(record, promise) } catch {
                promise.fail(error as? KafkaError ?? KafkaError(code: RD_KAFKA_RESP_ERR__QUEUE_FULL.rawValue, message: "\(error)", isRetriable: true))
            }
        }
    }

    /// Produces one record and waits for its delivery report. Throws the delivery error (after
    /// librdkafka's own retries, bounded by `message.timeout.ms`).
    public func send(_ record: KafkaOutgoingRecord) async throws -> DeliveryReport {
        let promise = DeliveryPromise(topic: record.topic)
        try await enqueue(record, promise)
        return try await promise.wait()
    }

    /// Sends several records, enqueued in input order (so records of one partition keep that
    /// order), and waits for all reports (returned in input order). Throws the first error after
    /// every enqueued record has its report; on an enqueue error the rest is not sent.
    public func sendAll(_ records: [KafkaOutgoingRecord]) async throws -> [DeliveryReport] {
        try await outcomes(records, goOnAfterOwnRefusal: false).map { try $0.get() }
    }

    /// Sends several records, enqueued in input order, and waits for every one's outcome (in
    /// input order): one refused record does not hide what happened to the others. A record
    /// refused at enqueue for its own sake (too large, say) gets that error and the next goes on;
    /// after a retriable enqueue error (the local queue stayed full) the rest is not tried and
    /// gets a retriable "not sent" error.
    public func sendEach(_ records: [KafkaOutgoingRecord]) async -> [Result<DeliveryReport, KafkaError>] {
        await outcomes(records, goOnAfterOwnRefusal: true)
    }

    /// Enqueues in input order and waits for every report. After an enqueue error the rest is
    /// not tried ("not sent", retriable when that error was), unless `goOnAfterOwnRefusal` and
    /// the error was the record's own (not retriable).
    private func outcomes(_ records: [KafkaOutgoingRecord], goOnAfterOwnRefusal: Bool) async -> [Result<DeliveryReport, KafkaError>] {
        enum Step { case waiting(DeliveryPromise), failed(KafkaError) }
        var steps: [Step] = []
        steps.reserveCapacity(records.count)
        for record in records {
            let promise = DeliveryPromise(topic: record.topic)
            do {
                try await enqueue(record, promise)
                steps.append(.waiting(promise))
            } catch {
                let e = Self.kafkaError(error)
                steps.append(.failed(e))
                if goOnAfterOwnRefusal && !e.isRetriable { continue }
                let notSent = KafkaError(code: e.code, message: "not sent: \(e.message)", isRetriable: e.isRetriable)
                steps += Array(repeating: .failed(notSent), count: records.count - steps.count)
                break
            }
        }
        var results: [Result<DeliveryReport, KafkaError>] = []
        results.reserveCapacity(records.count)
        for step in steps {
            switch step {
            case .failed(let e): results.append(.failure(e))
            case .waiting(let promise):
                do { results.append(.success(try await promise.wait())) } catch { results.append(.failure(Self.kafkaError(error))) }
            }
        }
        return results
    }

    private static func kafkaError(_ error: any Error) -> KafkaError {
        error as? KafkaError ?? KafkaError(code: KafkaError.invalidArgumentCode, message: "\(error)")
    }

    /// Enqueues with librdkafka; while its local queue is full, waits (without blocking a thread)
    /// for delivery reports to make room, up to `queueFullTimeout`.
    private func enqueue(
        _ record: KafkaOutgoingRecord, _ promise: DeliveryPromise, queueFullTimeout: Duration = .seconds(30)
    ) async throws {
        let deadline = ContinuousClock.now + queueFullTimeout
        while true {
            let opaque = Unmanaged.passRetained(promise).toOpaque()
            let error = closed.withLock { closed in
                closed ? KafkaError.closed("producer") : produceOnce(record, opaque: opaque)
            }
            guard let error else { return }
            Unmanaged<DeliveryPromise>.fromOpaque(opaque).release()  // not enqueued: no report will come
            guard error.code == RD_KAFKA_RESP_ERR__QUEUE_FULL.rawValue, ContinuousClock.now < deadline else { throw error }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    private func produceOnce(_ record: KafkaOutgoingRecord, opaque: UnsafeMutableRawPointer) -> KafkaError? {
        guard let headers = rd_kafka_headers_new(record.headers.count) else {
            return KafkaError.configuration("rd_kafka_headers_new failed")
        }
        for h in record.headers {
            // A nil pointer means a null value, so an empty value needs a real pointer.
            _ = withOptionalBytes(h.value) { rd_kafka_header_add(headers, h.key, -1, $0, $1) }
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

    /// The idempotent producer raised a fatal error (e.g. a sequence the broker no longer
    /// accepts): librdkafka refuses every further send on this handle.
    public var hasFatalError: Bool {
        rd_kafka_fatal_error(client.handle, nil, 0) != RD_KAFKA_RESP_ERR_NO_ERROR
    }

    /// Puts the producer into librdkafka's fatal-error state, as a broker fault would
    /// (`rd_kafka_test_fatal_error`); for tests of what callers do then.
    public func simulateFatalError(reason: String) {
        _ = rd_kafka_test_fatal_error(client.handle, RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER, reason)
    }

    /// Waits until every enqueued record is delivered or failed, up to `timeoutMs`.
    @discardableResult
    public func flush(timeoutMs: Int32 = 10_000) async -> Bool {
        let client = self.client
        let result = try? await runBlocking { rd_kafka_flush(client.handle, timeoutMs) }
        return result == RD_KAFKA_RESP_ERR_NO_ERROR
    }

    /// Refuses new sends, flushes, then stops the delivery-report thread. Records still
    /// undelivered after `timeoutMs` fail their `send`. Calling it again is harmless.
    public func close(timeoutMs: Int32 = 10_000) async {
        closed.withLock { $0 = true }
        if !(await flush(timeoutMs: timeoutMs)) {
            logger.warning("producer closed with undelivered records")
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

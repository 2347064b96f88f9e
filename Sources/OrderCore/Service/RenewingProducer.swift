import Kafka
import Logging
import Synchronization

/// What the service's parts need to send records.
public protocol RecordSender: Sendable {
    func send(_ record: KafkaOutgoingRecord) async throws -> DeliveryReport
    /// Sends several records (in input order) and returns every one's outcome, in input order.
    func sendEach(_ records: [KafkaOutgoingRecord]) async -> [Result<DeliveryReport, KafkaError>]
    /// Sends without waiting: `onDelivery` runs once with the delivery result.
    func send(_ record: KafkaOutgoingRecord, onDelivery: @escaping DeliveryHandler)
}

extension RecordSender {
    /// For senders with only an async `send` (test fakes): one after another.
    public func sendEach(_ records: [KafkaOutgoingRecord]) async -> [Result<DeliveryReport, KafkaError>] {
        var results: [Result<DeliveryReport, KafkaError>] = []
        for record in records {
            do { results.append(.success(try await send(record))) } catch {
                results.append(.failure(error as? KafkaError ?? KafkaError(code: KafkaError.invalidArgumentCode, message: "\(error)")))
            }
        }
        return results
    }

    /// For senders with only an async `send` (test fakes): waits for it in a task of its own.
    public func send(_ record: KafkaOutgoingRecord, onDelivery: @escaping DeliveryHandler) {
        Task {
            do { onDelivery(.success(try await send(record))) } catch {
                onDelivery(.failure(error as? KafkaError ?? KafkaError(code: KafkaError.invalidArgumentCode, message: "\(error)")))
            }
        }
    }
}

extension KafkaProducer: RecordSender {}

/// An idempotent producer that replaces itself when a delivery times out or the producer hit a
/// fatal error (after which librdkafka refuses every send on that handle). A broker that lost
/// its state (an in-memory broker restarted, a cluster rebuilt) keeps refusing the old producer
/// id with UNKNOWN_PRODUCER_ID, and librdkafka retries that until every message times out; a
/// fresh producer gets a new id. On a healthy cluster a timeout means an outage, and starting
/// afresh afterwards costs nothing.
public final class RenewingProducer: RecordSender {
    private let configuration: KafkaConfiguration
    private let deliveryReportInterval: Duration
    private let logger: Logger
    private let current: Mutex<(producer: KafkaProducer, generation: Int)>

    /// `deliveryReportInterval`: see `KafkaProducer.init`.
    public init(configuration: KafkaConfiguration, logger: Logger, deliveryReportInterval: Duration = .zero) throws {
        self.configuration = configuration
        self.deliveryReportInterval = deliveryReportInterval
        self.logger = logger
        current = Mutex((try KafkaProducer(configuration: configuration, logger: logger, deliveryReportInterval: deliveryReportInterval), 0))
    }

    public func send(_ record: KafkaOutgoingRecord) async throws -> DeliveryReport {
        let (producer, generation) = current.withLock { $0 }
        do { return try await ProducerSpans.send(record) { try await producer.send($0) } } catch { throw renewIfNeeded(error, producer, generation) }
    }

    public func sendEach(_ records: [KafkaOutgoingRecord]) async -> [Result<DeliveryReport, KafkaError>] {
        let (producer, generation) = current.withLock { $0 }
        return await ProducerSpans.sendEach(records) { await producer.sendEach($0) }.map { result in
            result.mapError { renewIfNeeded($0, producer, generation) as? KafkaError ?? $0 }
        }
    }

    /// Sends without waiting (`KafkaProducer.send(_:onDelivery:)`): `onDelivery` runs on the
    /// producer's poll thread with the report, at once with an enqueue error. A failure is told
    /// from a task, after the producer was renewed if it needs to be (renewing makes a handle,
    /// which is not for the poll thread); failures are rare.
    public func send(_ record: KafkaOutgoingRecord, onDelivery: @escaping DeliveryHandler) {
        let (producer, generation) = current.withLock { $0 }
        ProducerSpans.send(record, onDelivery: { result in
            guard case .failure(let error) = result else { return onDelivery(result) }
            Task {
                let renewed = self.renewIfNeeded(error, producer, generation)
                onDelivery(.failure(renewed as? KafkaError ?? error))
            }
        }) { producer.send($0, onDelivery: $1) }
    }

    /// Renews the producer after a timeout or a fatal error; a fatal error is then reported as
    /// retriable, since the fresh producer can send what the dead one could not.
    private func renewIfNeeded(_ error: any Error, _ producer: KafkaProducer, _ generation: Int) -> any Error {
        guard let e = error as? KafkaError else { return error }
        // Closing a replaced producer purges what it still held (and refuses sends that raced the
        // swap): not refused by the broker, so retriable, on the fresh producer. Without this the
        // dispatcher would answer such a reply with its `undeliverable` error instead. A purged
        // in-flight record may have been written all the same: then its resend is a second copy
        // (at least once, as after `MSG_TIMED_OUT`), rather than a copy and an error answer.
        let abandoned = [KafkaError.purgedQueueCode, KafkaError.purgedInFlightCode, KafkaError.destroyedCode].contains(e.code)
        if abandoned, current.withLock({ $0.generation }) != generation {
            return KafkaError(code: e.code, message: "\(e.message) (the producer was replaced)", isRetriable: true)
        }
        let fatal = e.isFatal || producer.hasFatalError
        guard fatal || e.code == KafkaError.messageTimedOutCode else { return error }
        let old: KafkaProducer? = current.withLock { c in
            guard c.generation == generation, let fresh = try? KafkaProducer(configuration: configuration, logger: logger, deliveryReportInterval: deliveryReportInterval)
            else {
                return nil
            }
            defer { c = (fresh, generation + 1) }
            return c.producer
        }
        if let old {
            logger.warning("\(fatal ? "producer fatal error" : "deliveries timed out"): replacing the producer (new producer id)")
            Task { await old.close(timeoutMs: 1_000) }
        }
        return fatal ? KafkaError(code: e.code, message: e.message, isRetriable: true) : error
    }

    /// Topic name → partition count, from the current producer's view of the cluster.
    public func topicPartitionCounts() async throws -> [String: Int32] {
        try await current.withLock { $0 }.producer.topicPartitionCounts()
    }

    /// The producer in use now (tests).
    var currentProducer: KafkaProducer { current.withLock { $0.producer } }

    public func close() async { await current.withLock { $0 }.producer.close() }
}

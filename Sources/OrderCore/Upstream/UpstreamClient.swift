import Foundation
import Kafka
import Logging
import Synchronization

public enum UpstreamFailure: Error, Sendable, Equatable {
    /// No reply within the configured timeout.
    case timeout(service: String)
    /// The request could not be sent.
    case unavailable(service: String, reason: String)
    /// A reply arrived but does not follow the contract.
    case badReply(service: String, reason: String)
}

/// Request/reply over Kafka with the Product and Inventory services.
///
/// Several instances of the order service share the reply topics. Each instance therefore reads
/// every partition of the reply topics itself, outside any consumer group, starting at the end,
/// and keeps only replies whose correlation id it issued; the others belong to other instances.
public final class UpstreamClient: Sendable {
    private let producer: any RecordSender
    private let consumer: KafkaConsumer
    private let replyTopics: [String]
    private let instanceId: String
    private let timeout: Duration
    let logger: Logger
    private let pending = Mutex<[String: CheckedContinuation<JSON, any Error>]>([:])
    private let counter = Atomic<Int64>(0)
    /// With tracing on: the `traceparent` of each reply handed over, until its request links to it.
    let replyTraces = Mutex<[String: String]>([:])
    /// Upstream requests waiting for a reply at most (far above what `maxInFlight` records need).
    let maxPending: Int
    private let reader = Mutex<Task<Void, Never>?>(nil)

    public init(
        producer: any RecordSender, consumerConfiguration: KafkaConfiguration, replyTopics: [String],
        instanceId: String, timeout: Duration, maxPending: Int = 20_000, logger: Logger
    ) throws {
        self.maxPending = maxPending
        var config = consumerConfiguration
        // assign() only: never joins or commits, but librdkafka wants a group id for assign().
        config["group.id"] = "order-service-replies-\(instanceId)"
        config["enable.auto.commit"] = "false"
        self.consumer = try KafkaConsumer(configuration: config, logger: logger)
        self.producer = producer
        self.replyTopics = replyTopics
        self.instanceId = instanceId
        self.timeout = timeout
        self.logger = logger
    }

    /// Positions on the current end of every reply partition (so no reply to a request sent after
    /// this returns can be missed) and starts reading.
    public func start() async throws {
        let counts = try await consumer.topicPartitionCounts()
        var start: [TopicPartition: Int64] = [:]
        for topic in replyTopics {
            guard let n = counts[topic] else { throw KafkaError.configuration("reply topic \(topic) does not exist") }
            for p in 0..<n {
                let tp = TopicPartition(topic, p)
                start[tp] = try await consumer.watermarks(tp).high
            }
        }
        try consumer.assign(start)
        let task = Task { [self] in
            for await record in consumer.records { deliver(record) }
        }
        reader.withLock { $0 = task }
    }

    /// Hands a reply to the request waiting for it. Replies nobody waits for (other instances',
    /// late, duplicate, unknown ids) are dropped. A reply that is ours but not a JSON object fails
    /// its request at once instead of letting it wait for the timeout.
    private func deliver(_ record: KafkaRecord) {
        // Most records on the shared reply topics are other instances' (or strays): with a
        // correlation header that is not ours, drop them before parsing anything.
        if let header = record.header("correlation-id")?.stringValue, !pending.withLock({ $0[header] != nil }) { return }
        let json = record.value.flatMap { try? JSON.parse($0) }
        var correlation = record.header("correlation-id")?.stringValue
        if correlation == nil, case .string(let id)? = json?["request_id"] { correlation = id }
        guard let correlation, let cont = pending.withLock({ $0.removeValue(forKey: correlation) }) else { return }
        if Telemetry.isTracing, let tp = record.header("traceparent")?.stringValue { replyTraces.withLock { $0[correlation] = tp } }
        guard let json, case .object = json else {
            cont.resume(throwing: UpstreamFailure.badReply(service: "upstream", reason: "the reply is not a JSON object"))
            return
        }
        cont.resume(returning: json)
    }

    /// Sends `body(requestId)` to `topic` with reply-to/correlation-id headers and waits for the
    /// reply on `replyTopic`; returns the request's id with the reply.
    func untracedRequest(service: String, topic: String, replyTopic: String, body: (String) -> JSON) async throws(UpstreamFailure) -> (id: String, reply: JSON) {
        let id = "\(instanceId)-\(counter.add(1, ordering: .relaxed).newValue)"
        let record = KafkaOutgoingRecord(
            topic: topic, key: Array(id.utf8), value: body(id).bytes,
            headers: [KafkaHeader("reply-to", replyTopic), KafkaHeader("correlation-id", id), KafkaHeader("content-type", "application/json")]
                + TraceContext.outgoingHeaders)
        let timeout = self.timeout
        let maxPending = self.maxPending
        do {
            return (id, try await withCheckedThrowingContinuation { (cont: CheckedContinuation<JSON, any Error>) in
                // Bounded: every entry leaves on its reply or its timeout, and no more than
                // `maxPending` wait at once (beyond that the request fails at once, changing nothing).
                let admitted = pending.withLock { p -> Bool in
                    guard p.count < maxPending else { return false }
                    p[id] = cont
                    return true
                }
                guard admitted else {
                    cont.resume(throwing: UpstreamFailure.unavailable(service: service, reason: "\(maxPending) upstream requests are waiting already"))
                    return
                }
                Task {
                    let started = ContinuousClock.now
                    do {
                        _ = try await producer.send(record)
                    } catch {
                        if let c = pending.withLock({ $0.removeValue(forKey: id) }) {
                            c.resume(throwing: UpstreamFailure.unavailable(service: service, reason: "\(error)"))
                        }
                        return
                    }
                    let sent = ContinuousClock.now
                    try? await Task.sleep(until: started + timeout)
                    if let c = pending.withLock({ $0.removeValue(forKey: id) }) {
                        logger.warning("\(service) request timed out", metadata: [
                            "correlation_id": "\(id)", "topic": "\(topic)", "send_ms": "\((sent - started).components.attoseconds / 1_000_000_000_000_000 + (sent - started).components.seconds * 1000)",
                        ])
                        c.resume(throwing: UpstreamFailure.timeout(service: service))
                    }
                }
            })
        } catch let failure as UpstreamFailure {
            throw failure
        } catch {
            throw .unavailable(service: service, reason: "\(error)")
        }
    }

    /// Requests waiting for a reply now.
    public var pendingCount: Int { pending.withLock { $0.count } }

    public func close() async {
        await consumer.close()
        await reader.withLock { $0 }?.value
        let waiting = pending.withLock { p -> [CheckedContinuation<JSON, any Error>] in
            defer { p.removeAll() }
            return Array(p.values)
        }
        waiting.forEach { $0.resume(throwing: UpstreamFailure.unavailable(service: "upstream", reason: "shutting down")) }
    }
}

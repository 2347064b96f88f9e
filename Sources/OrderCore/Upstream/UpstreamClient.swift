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
///
/// A request sends from the caller's task without waiting for the delivery report, and waits on
/// its `ReplySlot` (completed by the reply, a failed delivery, the deadline or close); one sweeper task
/// fails the slots whose deadline passed (no task or timer per request: fewer thread hand-offs).
/// The reply consumer pushes each reply on its poll thread (`Options.deliver`) to `Inbox.deliver`,
/// which resumes the waiting request directly (no reader task in between).
public final class UpstreamClient: Sendable {
    private let producer: any RecordSender
    private let consumer: KafkaConsumer
    private let replyTopics: [String]
    private let instanceId: String
    private let timeout: Duration
    let logger: Logger
    /// The waiting requests, shared with the reply consumer's poll thread.
    let inbox: Inbox
    private let counter = Atomic<Int64>(0)
    /// Upstream requests waiting for a reply at most (far above what `maxInFlight` records need).
    let maxPending: Int

    public init(
        producer: any RecordSender, consumerConfiguration: KafkaConfiguration, replyTopics: [String],
        instanceId: String, timeout: Duration, maxPending: Int = 20_000, logger: Logger
    ) throws {
        self.maxPending = maxPending
        var config = consumerConfiguration
        // assign() only: never joins or commits, but librdkafka wants a group id for assign().
        config["group.id"] = "order-service-replies-\(instanceId)"
        config["enable.auto.commit"] = "false"
        let inbox = Inbox()
        self.inbox = inbox
        // Push delivery: replies are handed over on the consumer's poll thread.
        self.consumer = try KafkaConsumer(
            configuration: config, mode: .assigned, options: KafkaConsumer.Options(deliver: { inbox.deliver($0) }), logger: logger)
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
    }

    /// The requests waiting for replies, and where replies arrive (on the reply consumer's poll
    /// thread). A class of its own so the consumer's sink can reach it from the client's init.
    final class Inbox: Sendable {
        fileprivate let pending = Mutex(Pending())
        /// With tracing on: the `traceparent` of each reply handed over, until its request links to it.
        let replyTraces = Mutex<[String: String]>([:])

        /// Hands a reply to the request waiting for it. Replies nobody waits for (other instances',
        /// late, duplicate, unknown ids) are dropped. A reply that is ours but not a JSON object
        /// fails its request at once instead of letting it wait for the timeout. Runs on the poll
        /// thread: foreign replies cost one header lookup and one lock.
        func deliver(_ record: KafkaRecord) {
            // Most records on the shared reply topics are other instances' (or strays): with a
            // correlation header that is not ours, drop them before parsing anything.
            let header = record.header("correlation-id")?.stringValue
            if let header, !pending.withLock({ $0.slots[header] != nil }) { return }
            let json = record.value.flatMap { try? JSON.parse($0) }
            var correlation = header
            if correlation == nil, case .string(let id)? = json?["request_id"] { correlation = id }
            guard let correlation, let slot = pending.withLock({ $0.slots.removeValue(forKey: correlation) }) else { return }
            if Telemetry.isTracing, let tp = record.header("traceparent")?.stringValue { replyTraces.withLock { $0[correlation] = tp } }
            guard let json, case .object = json else {
                slot.complete(.failure(.badReply(service: "upstream", reason: "the reply is not a JSON object")))
                return
            }
            slot.complete(.success(json))
        }
    }

    /// Sends `body(requestId)` to `topic` with reply-to/correlation-id headers and waits for the
    /// reply on `replyTopic`; returns the request's id with the reply.
    func untracedRequest(service: String, topic: String, replyTopic: String, body: (String) -> JSON) async throws(UpstreamFailure) -> (id: String, reply: JSON) {
        let id = "\(instanceId)-\(counter.add(1, ordering: .relaxed).newValue)"
        let record = KafkaOutgoingRecord(
            topic: topic, key: Array(id.utf8), value: body(id).bytes,
            headers: [KafkaHeader("reply-to", replyTopic), KafkaHeader("correlation-id", id), KafkaHeader("content-type", "application/json")]
                + TraceContext.outgoingHeaders)
        let started = ContinuousClock.now
        let slot = ReplySlot(service: service, topic: topic, deadline: started + timeout)
        let (admitted, startSweeper) = inbox.pending.withLock { p -> (Bool, Bool) in
            // Bounded: every entry leaves on its reply or its deadline, and no more than
            // `maxPending` wait at once (beyond that the request fails at once, changing nothing).
            guard p.slots.count < maxPending else { return (false, false) }
            p.slots[id] = slot
            p.order.append(id)
            guard !p.sweeping else { return (true, false) }
            p.sweeping = true
            return (true, true)
        }
        guard admitted else { throw .unavailable(service: service, reason: "\(maxPending) upstream requests are waiting already") }
        // Detached: the sweeper serves every request, so it must not carry the task-locals (trace
        // context, span) of the request that happened to start it into its log lines.
        if startSweeper { Task.detached { await self.sweep() } }
        // The delivery report is not waited for: the request waits once, for its reply, and a
        // failed send fails the slot at once (unless it was completed meanwhile: closed, timed out).
        let inbox = self.inbox
        producer.send(record) { result in
            switch result {
            case .success: slot.sendTook(ContinuousClock.now - started)
            case .failure(let error):
                if inbox.pending.withLock({ $0.slots.removeValue(forKey: id) }) != nil {
                    slot.complete(.failure(.unavailable(service: service, reason: "\(error)")))
                }
            }
        }
        do {
            return (id, try await slot.wait())
        } catch {
            // Logged here, in the request's own task, so the line carries its trace context.
            if case .timeout = error {
                logger.warning("\(service) request timed out", metadata: [
                    "correlation_id": "\(id)", "topic": "\(topic)", "send_ms": "\(slot.sendMilliseconds.map(String.init) ?? "unacknowledged")",
                ])
            }
            throw error
        }
    }

    /// Fails the slots whose deadline passed, oldest first (every request has the same timeout,
    /// so `order` is in deadline order), sleeping until the next deadline; ends when none waits.
    private func sweep() async {
        while true {
            let (expired, next) = inbox.pending.withLock { p -> ([(String, ReplySlot)], ContinuousClock.Instant?) in
                let now = ContinuousClock.now
                var expired: [(String, ReplySlot)] = []
                var next: ContinuousClock.Instant?
                while p.head < p.order.count {
                    let id = p.order[p.head]
                    guard let slot = p.slots[id] else {  // answered, failed or closed already
                        p.head += 1
                        continue
                    }
                    guard slot.deadline <= now else {
                        next = slot.deadline
                        break
                    }
                    p.slots[id] = nil
                    p.head += 1
                    expired.append((id, slot))
                }
                if next == nil {
                    p.order.removeAll(keepingCapacity: true)
                    p.head = 0
                    p.sweeping = false
                } else if p.head >= 1_024, p.head * 2 >= p.order.count {
                    p.order.removeFirst(p.head)
                    p.head = 0
                }
                return (expired, next)
            }
            for (_, slot) in expired { slot.complete(.failure(.timeout(service: slot.service))) }
            guard let next else { return }
            try? await Task.sleep(until: next)
        }
    }

    /// Requests waiting for a reply now.
    public var pendingCount: Int { inbox.pending.withLock { $0.slots.count } }

    public func close() async {
        await consumer.close()  // no reply is delivered after this
        let waiting = inbox.pending.withLock { p -> [ReplySlot] in
            defer { p.slots.removeAll() }
            return Array(p.slots.values)
        }
        waiting.forEach { $0.complete(.failure(.unavailable(service: "upstream", reason: "shutting down"))) }
    }

    /// Requests waiting for replies, and their ids in the order they were asked (= deadline order;
    /// ids of answered requests stay until the sweeper passes them).
    fileprivate struct Pending {
        var slots: [String: ReplySlot] = [:]
        var order: [String] = []
        var head = 0
        var sweeping = false
    }
}

/// One upstream request's outcome: completed once (reply, failure, deadline or close);
/// `wait()` may come before or after that.
private final class ReplySlot: Sendable {
    let service: String
    let topic: String
    let deadline: ContinuousClock.Instant
    private enum State {
        case waiting(CheckedContinuation<JSON, any Error>?)
        case done(Result<JSON, UpstreamFailure>)
    }
    private let state = Mutex(State.waiting(nil))
    private let sendTime = Mutex<Duration?>(nil)

    init(service: String, topic: String, deadline: ContinuousClock.Instant) {
        self.service = service
        self.topic = topic
        self.deadline = deadline
    }

    func complete(_ result: Result<JSON, UpstreamFailure>) {
        let waiter = state.withLock { s -> CheckedContinuation<JSON, any Error>? in
            guard case .waiting(let c) = s else { return nil }
            s = .done(result)
            return c
        }
        waiter?.resume(with: result.mapError { $0 as any Error })
    }

    func wait() async throws(UpstreamFailure) -> JSON {
        do {
            return try await withCheckedThrowingContinuation { cont in
                let done = state.withLock { s -> Result<JSON, UpstreamFailure>? in
                    switch s {
                    case .done(let r): return r
                    case .waiting: s = .waiting(cont); return nil
                    }
                }
                if let done { cont.resume(with: done.mapError { $0 as any Error }) }
            }
        } catch let failure as UpstreamFailure {
            throw failure
        } catch {
            throw .unavailable(service: service, reason: "\(error)")
        }
    }

    func sendTook(_ d: Duration) { sendTime.withLock { $0 = d } }

    var sendMilliseconds: Int64? {
        sendTime.withLock { $0 }.map { $0.components.seconds * 1000 + $0.components.attoseconds / 1_000_000_000_000_000 }
    }
}

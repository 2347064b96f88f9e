import Kafka
import Logging
import OrderCore
import ServiceLifecycle
import Synchronization

/// The request/reply loop shared by the reference services: consume in a group, compute the
/// reply, send it to the `reply-to` topic (or the default reply topic) with the request's key
/// and `correlation-id`, and only then mark the offset done.
public struct Responder: Service {
    public let name: String
    public let kafka: KafkaConfiguration
    public let groupId: String
    public let routes: [String: String]  // request topic → default reply topic
    public let logger: Logger
    public let handle: @Sendable (KafkaRecord, JSON) async throws -> JSON?

    public init(
        name: String, kafka: KafkaConfiguration, groupId: String, routes: [String: String], logger: Logger,
        handle: @escaping @Sendable (KafkaRecord, JSON) async throws -> JSON?
    ) {
        self.name = name
        self.kafka = kafka
        self.groupId = groupId
        self.routes = routes
        self.logger = logger
        self.handle = handle
    }

    public func run() async throws {
        let producer = try RenewingProducer(configuration: kafka, logger: logger)
        var config = kafka
        config["group.id"] = groupId
        let consumer = try KafkaConsumer(configuration: config, logger: logger)
        try consumer.subscribe(Array(routes.keys))
        logger.info("\(name) serving \(routes.keys.sorted())")
        let offsets = OffsetBook()
        let gate = Gate(limit: 256)
        await withGracefulShutdownHandler {
            // Records are served concurrently; an offset is stored only when every earlier record
            // of its partition has been answered.
            await withDiscardingTaskGroup { group in
                for await record in consumer.records {
                    offsets.begin(record)
                    await gate.enter()
                    group.addTask {
                        await Spans.consuming(record) { await serve(record, producer: producer) }
                        if let next = offsets.finish(record) { try? consumer.store(record.topicPartition, nextOffset: next) }
                        await gate.leave()
                    }
                }
            }
        } onGracefulShutdown: {
            Task { await consumer.close() }
        }
        await consumer.close()
        await producer.close()
    }

    private func serve(_ record: KafkaRecord, producer: RenewingProducer) async {
        guard let value = record.value, let request = try? JSON.parse(value), case .object = request else {
            logger.warning("\(name): ignoring a record that is not a JSON object at \(record.topic)[\(record.partition)]@\(record.offset)")
            return
        }
        var backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(5))
        while true {
            do {
                guard let reply = try await handle(record, request) else { return }
                let topic = record.header("reply-to")?.stringValue ?? routes[record.topic] ?? ""
                var headers = [KafkaHeader("content-type", "application/json")]
                if let c = record.header("correlation-id") { headers.append(c) }
                _ = try await producer.send(KafkaOutgoingRecord(topic: topic, key: record.key, value: reply.bytes, headers: headers))
                return
            } catch {
                logger.warning("\(name): \(error); retrying in \(backoff.current)")
                await backoff.wait()
            }
        }
    }
}

extension JSON {
    var int64: Int64? { if case .int(let v) = self { v } else { nil } }
}

/// The dispatcher's `OffsetTracker` behind a lock (no actor hop per record).
final class OffsetBook: Sendable {
    private let tracker = Mutex(OffsetTracker())
    func begin(_ r: KafkaRecord) { tracker.withLock { $0.begin(r.topicPartition, r.offset) } }
    func finish(_ r: KafkaRecord) -> Int64? { tracker.withLock { $0.finish(r.topicPartition, r.offset) } }
}

/// Bounds concurrent work: `enter` waits while `limit` tasks are inside.
actor Gate {
    private let limit: Int
    private var inside = 0
    private var waiting: [CheckedContinuation<Void, Never>] = []
    init(limit: Int) { self.limit = limit }
    func enter() async {
        if inside < limit { inside += 1; return }
        await withCheckedContinuation { waiting.append($0) }
    }
    func leave() {
        if waiting.isEmpty { inside -= 1 } else { waiting.removeFirst().resume() }
    }
}

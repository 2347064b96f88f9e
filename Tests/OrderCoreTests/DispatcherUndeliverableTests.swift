import Kafka
import Logging
import Synchronization
import Testing

@testable import OrderCore

/// A handler whose reply goes to a client's reply-to topic, with a dead-letter copy; its
/// `undeliverable` answer (a small reply on the default topic plus a copy) is counted.
final class ReplyToHandler: RecordHandler {
    let undeliverableCalls = Mutex<[String]>([])
    let failureCalls = Mutex(0)
    let throwsOnHandle: Bool

    init(throwsOnHandle: Bool = false) { self.throwsOnHandle = throwsOnHandle }

    func laneKey(for record: KafkaRecord) -> String { "k" }
    func handle(_ record: KafkaRecord) async throws -> [KafkaOutgoingRecord] {
        struct Bug: Error {}
        if throwsOnHandle { throw Bug() }
        return [Self.out("client-replies", "reply"), Self.out("dlq", "copy")]
    }
    func failure(_ record: KafkaRecord, error: any Error) -> [KafkaOutgoingRecord] {
        failureCalls.withLock { $0 += 1 }
        return [Self.out("client-replies", "failure-reply")]
    }
    func undeliverable(_ record: KafkaRecord, error: any Error) -> [KafkaOutgoingRecord] {
        undeliverableCalls.withLock { $0.append("\(error)") }
        return [Self.out("default-replies", "fallback-reply"), Self.out("dlq", "refused-copy")]
    }
    func isRetriable(_ error: any Error) -> Bool { (error as? KafkaError)?.isRetriable ?? false }

    static func out(_ topic: String, _ value: String) -> KafkaOutgoingRecord {
        KafkaOutgoingRecord(topic: topic, key: nil, value: Array(value.utf8))
    }
}

@Suite("Dispatcher: a reply the broker refuses for good", .timeLimit(.minutes(2)))
struct DispatcherUndeliverableTests {
    struct Run {
        let sent: [String]
        let stored: [Int64]
    }

    /// Runs records at offsets 0 and 1 through a dispatcher whose broker refuses every record
    /// to a topic in `refusing` for good (and everything else once, retriably, when `flaky`).
    func run(_ handler: ReplyToHandler, refusing: Set<String>, flaky: Bool = false) async -> Run {
        let sent = Mutex<[String]>([])
        let stored = Mutex<[Int64]>([])
        let hiccups = Mutex(0)
        var config = Dispatcher.Configuration()
        config.initialBackoff = .milliseconds(1)
        var logger = Logger(label: "t")
        logger.logLevel = .critical
        let d = Dispatcher(
            handler: handler,
            effects: Dispatcher.Effects(
                send: { records in
                    for r in records {
                        let value = String(decoding: r.value ?? [], as: UTF8.self)
                        if refusing.contains(r.topic) {
                            throw KafkaError(code: 3, message: "UNKNOWN_TOPIC_OR_PART \(r.topic)", isRetriable: false)
                        }
                        if flaky, hiccups.withLock({ $0 += 1; return $0 }) == 1 {
                            throw KafkaError(code: -185, message: "transient", isRetriable: true)
                        }
                        sent.withLock { $0.append("\(r.topic):\(value)") }
                    }
                },
                storeOffset: { _, o in stored.withLock { $0.append(o) } }),
            configuration: config, logger: logger)
        d.partitionsAssigned([TopicPartition("in", 0)])
        await d.submit(KafkaRecord(topic: "in", partition: 0, offset: 0, key: nil, value: nil))
        await d.submit(KafkaRecord(topic: "in", partition: 0, offset: 1, key: nil, value: nil))
        await d.waitIdle()
        return Run(sent: sent.withLock { $0 }, stored: stored.withLock { $0 })
    }

    @Test func aRefusedReplyIsReplacedByTheUndeliverableAnswerOnce() async {
        let handler = ReplyToHandler()
        let r = await run(handler, refusing: ["client-replies"])
        #expect(r.sent == [
            "default-replies:fallback-reply", "dlq:refused-copy", "default-replies:fallback-reply", "dlq:refused-copy",
        ], "the original dead-letter copy is not sent: the fallback answer replaces all outputs")
        #expect(handler.undeliverableCalls.withLock { $0.count } == 2, "once per record")
        #expect(handler.undeliverableCalls.withLock { $0.allSatisfy { $0.contains("UNKNOWN_TOPIC_OR_PART") } })
        #expect(handler.failureCalls.withLock { $0 } == 0)
        #expect(r.stored == [1, 2])
    }

    @Test func aRefusedFallbackIsDroppedAndTheOffsetStillAdvances() async {
        let handler = ReplyToHandler()
        let r = await run(handler, refusing: ["client-replies", "default-replies"])
        #expect(r.sent == ["dlq:refused-copy", "dlq:refused-copy"], "the fallback's own copy still goes")
        #expect(handler.undeliverableCalls.withLock { $0.count } == 2, "not called again for the refused fallback")
        #expect(r.stored == [1, 2])
    }

    @Test func aRetriableHiccupIsRetriedNotTreatedAsRefusal() async {
        let handler = ReplyToHandler()
        let r = await run(handler, refusing: [], flaky: true)
        #expect(r.sent == ["client-replies:reply", "dlq:copy", "client-replies:reply", "dlq:copy"])
        #expect(handler.undeliverableCalls.withLock { $0.isEmpty })
        #expect(r.stored == [1, 2])
    }

    @Test func aRefusedFailureReplyAlsoFallsBackOnce() async {
        let handler = ReplyToHandler(throwsOnHandle: true)
        let r = await run(handler, refusing: ["client-replies", "default-replies"])
        #expect(handler.failureCalls.withLock { $0 } == 2)
        #expect(handler.undeliverableCalls.withLock { $0.count } == 2)
        #expect(r.sent == ["dlq:refused-copy", "dlq:refused-copy"])
        #expect(r.stored == [1, 2])
    }
}

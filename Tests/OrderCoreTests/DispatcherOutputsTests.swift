import Kafka
import Logging
import Synchronization
import Testing

@testable import OrderCore

/// A handler answering every record with a reply and a dead-letter copy.
private struct TwoOutputs: RecordHandler {
    func laneKey(for record: KafkaRecord) -> String { "k" }
    func handle(_ record: KafkaRecord) async throws -> [KafkaOutgoingRecord] {
        [KafkaOutgoingRecord(topic: "replies", key: nil, value: Array("reply".utf8)),
         KafkaOutgoingRecord(topic: "dlq", key: nil, value: Array("copy".utf8))]
    }
    func failure(_ record: KafkaRecord, error: any Error) -> [KafkaOutgoingRecord] {
        [KafkaOutgoingRecord(topic: "replies", key: nil, value: Array("failure".utf8))]
    }
    func isRetriable(_ error: any Error) -> Bool { (error as? KafkaError)?.isRetriable ?? false }
}

@Suite(.timeLimit(.minutes(1))) struct DispatcherOutputsTests {
    @Test func aRetryAfterAPartialSendDoesNotResendTheReply() async {
        let sent = Mutex<[String]>([])
        let dlqAttempts = Mutex(0)
        let stored = Mutex<[Int64]>([])
        var config = Dispatcher.Configuration()
        config.initialBackoff = .milliseconds(1)
        let d = Dispatcher(
            handler: TwoOutputs(),
            effects: Dispatcher.Effects(
                send: { records in
                    for r in records {
                        if r.topic == "dlq", dlqAttempts.withLock({ $0 += 1; return $0 }) <= 2 {
                            throw KafkaError(code: -185, message: "transient", isRetriable: true)
                        }
                        sent.withLock { $0.append(String(decoding: r.value ?? [], as: UTF8.self)) }
                    }
                },
                storeOffset: { _, o in stored.withLock { $0.append(o) } }),
            configuration: config, logger: Logger(label: "t"))
        let tp = TopicPartition("in", 0)
        d.partitionsAssigned([tp])
        await d.submit(KafkaRecord(topic: "in", partition: 0, offset: 7, key: nil, value: nil))
        await d.waitIdle()
        #expect(sent.withLock { $0 } == ["reply", "copy"])
        #expect(stored.withLock { $0 } == [8])
    }

    @Test func aDeadLetterTheBrokerRefusesForGoodIsDroppedAndThePartitionMovesOn() async {
        let sent = Mutex<[String]>([])
        let stored = Mutex<[Int64]>([])
        let d = Dispatcher(
            handler: TwoOutputs(),
            effects: Dispatcher.Effects(
                send: { records in
                    for r in records {
                        if r.topic == "dlq" { throw KafkaError(code: 10, message: "MSG_SIZE_TOO_LARGE", isRetriable: false) }
                        sent.withLock { $0.append(String(decoding: r.value ?? [], as: UTF8.self)) }
                    }
                },
                storeOffset: { _, o in stored.withLock { $0.append(o) } }),
            logger: Logger(label: "t"))
        let tp = TopicPartition("in", 0)
        d.partitionsAssigned([tp])
        await d.submit(KafkaRecord(topic: "in", partition: 0, offset: 0, key: nil, value: nil))
        await d.waitIdle()
        #expect(sent.withLock { $0 } == ["reply"])  // exactly one reply, not a second failure reply
        #expect(stored.withLock { $0 } == [1])
    }
}

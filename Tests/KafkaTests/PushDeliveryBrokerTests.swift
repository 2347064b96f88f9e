import Foundation
import Kafka
import Synchronization
import Testing
import TestSupport

/// Push delivery (`Options.deliver`) against the real broker: a group consumer hands every record
/// to its sink on the poll thread, in offset order per partition; `records` yields nothing and
/// ends at close; a pause stops fetching and a resume continues where it stopped.
@Suite("Push delivery against the broker", .serialized, .timeLimit(.minutes(1)))
struct PushDeliveryBrokerTests {
    let logger = TestKafka.logger()

    init() async throws { try await TestKafka.requireBroker() }

    private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    @Test func aGroupConsumerPushesEveryRecordInOrderAndRecordsOnlyEnds() async throws {
        let topic = TestKafka.uniqueName("t")
        try await TestKafka.createTopic(topic, partitions: 2)
        let producer = try KafkaProducer(configuration: TestKafka.configuration(), logger: logger)
        _ = try await producer.sendAll((0..<200).map {
            KafkaOutgoingRecord(topic: topic, partition: Int32($0 % 2), key: nil, value: bytes("\($0)"))
        })

        let seen = Mutex<[KafkaRecord]>([])
        let consumer = try KafkaConsumer(
            configuration: TestKafka.consumerConfiguration(group: TestKafka.uniqueName("g")),
            options: KafkaConsumer.Options(deliver: { r in seen.withLock { $0.append(r) } }), logger: logger)
        let yielded = Mutex(0)
        let reader = Task {
            for await _ in consumer.records { yielded.withLock { $0 += 1 } }
        }
        try consumer.subscribe([topic])
        try await TestKafka.eventually("200 records pushed") { seen.withLock { $0.count } >= 200 }

        // A pause stops fetching; a resume continues at the next record (nothing lost, nothing twice).
        let p0 = TopicPartition(topic, 0)
        try consumer.pause([p0])
        try await Task.sleep(for: .milliseconds(200))
        let atPause = seen.withLock { $0.count }
        _ = try await producer.sendAll((200..<220).map { KafkaOutgoingRecord(topic: topic, partition: 0, key: nil, value: bytes("\($0)")) })
        try await Task.sleep(for: .milliseconds(500))
        #expect(seen.withLock { $0.count } == atPause, "records of a paused partition were fetched")
        try consumer.resume([p0])
        try await TestKafka.eventually("the paused partition's records after resume") { seen.withLock { $0.count } >= 220 }

        try await TestKafka.within(.seconds(20), "close") { await consumer.close() }
        try await TestKafka.within(.seconds(5), "records ends at close") { await reader.value }
        await producer.close()

        let got = seen.withLock { $0 }
        #expect(yielded.withLock { $0 } == 0)
        for partition in Int32(0)..<2 {
            let offsets = got.filter { $0.partition == partition }.map(\.offset)
            #expect(offsets == Array(0..<Int64(offsets.count)), "partition \(partition) in order, once each")
        }
        #expect(got.count == 220)
    }
}

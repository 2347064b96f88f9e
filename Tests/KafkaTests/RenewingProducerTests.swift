import Kafka
@testable import OrderCore
import Testing
import TestSupport

/// The service's producer after librdkafka declared it dead (against the mock cluster).
@Suite("Renewing producer", .timeLimit(.minutes(1)))
struct RenewingProducerTests {
    let logger = TestKafka.logger(level: .critical)  // the fatal error is logged on purpose

    private func record(_ value: String) -> KafkaOutgoingRecord {
        KafkaOutgoingRecord(topic: "replies", key: Array("k".utf8), value: Array(value.utf8))
    }

    @Test func aFatalProducerErrorIsRetriableAndTheNextSendUsesAFreshProducer() async throws {
        let cluster = try KafkaMockCluster(logger: logger)
        try cluster.createTopic("replies", partitions: 1)
        let producer = try RenewingProducer(
            configuration: KafkaConfiguration.producerDefaults.merging(KafkaConfiguration(["bootstrap.servers": cluster.bootstrapServers])),
            logger: logger)
        _ = try await TestKafka.within(.seconds(20), "first send") { try await producer.send(record("before")) }

        // A broker that lost its state answers an idempotent producer with sequence errors,
        // which librdkafka makes fatal: that handle refuses every further send.
        let dead = producer.currentProducer
        dead.simulateFatalError(reason: "test: sequence desynchronised")
        #expect(dead.hasFatalError)
        let error = await #expect(throws: KafkaError.self) {
            try await TestKafka.within(.seconds(20), "send on the dead producer") { try await producer.send(record("refused")) }
        }
        #expect(error?.isRetriable == true, "the dispatcher retries it, on the fresh producer")
        #expect(producer.currentProducer !== dead)

        let report = try await TestKafka.within(.seconds(20), "send after renewal") { try await producer.send(record("after")) }
        #expect(report.partition == 0)
        await producer.close()
    }
}

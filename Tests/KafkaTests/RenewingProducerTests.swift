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

    /// A mock cluster with the topic, and a producer that has sent one record to it.
    private func started() async throws -> (KafkaMockCluster, RenewingProducer) {
        let cluster = try KafkaMockCluster(logger: logger)
        try cluster.createTopic("replies", partitions: 1)
        let producer = try RenewingProducer(
            configuration: KafkaConfiguration.producerDefaults.merging(KafkaConfiguration(["bootstrap.servers": cluster.bootstrapServers])),
            logger: logger)
        _ = try await TestKafka.within(.seconds(20), "first send") { try await producer.send(record("before")) }
        return (cluster, producer)
    }

    @Test func aFatalProducerErrorIsRetriableAndTheNextSendUsesAFreshProducer() async throws {
        let (cluster, producer) = try await started()

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

    @Test func aSendPurgedByTheReplacedProducersCloseIsRetriable() async throws {
        let (cluster, producer) = try await started()
        let original = producer.currentProducer
        // With the broker down, `waiting` stays queued on the original producer; the fatal error
        // makes the next send renew the producer, and closing the original purges `waiting`.
        cluster.setBrokerDown(1)
        let waiting = Task { try await producer.send(self.record("waiting")) }
        try await Task.sleep(for: .milliseconds(500))
        original.simulateFatalError(reason: "test: sequence desynchronised")
        _ = await #expect(throws: KafkaError.self) { try await producer.send(record("refused")) }
        #expect(producer.currentProducer !== original)
        let error = await #expect(throws: KafkaError.self) {
            _ = try await TestKafka.within(.seconds(20), "the purged send") { try await waiting.value }
        }
        #expect(
            error?.code == KafkaError.purgedQueueCode || error?.code == KafkaError.purgedInFlightCode,
            "purged by the close: \(String(describing: error))")
        #expect(error?.isRetriable == true, "the dispatcher resends it instead of answering with an error")

        cluster.setBrokerUp(1)
        _ = try await TestKafka.within(.seconds(20), "send after renewal") { try await producer.send(record("after")) }
        await producer.close()
    }
}

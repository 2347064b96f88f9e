import Foundation
import Kafka
import Testing
import TestSupport

/// Fault injection with librdkafka's in-process mock cluster (no real broker involved).
@Suite("Against the mock cluster", .timeLimit(.minutes(1)))
struct MockClusterTests {
    let logger = TestKafka.logger(level: .critical)  // these tests provoke connection failures
    static let produceApiKey: Int16 = 0

    private func record(_ topic: String, _ value: String) -> KafkaOutgoingRecord {
        KafkaOutgoingRecord(topic: topic, key: Array("k".utf8), value: Array(value.utf8))
    }

    private func producer(_ cluster: KafkaMockCluster, _ extra: [String: String] = [:]) throws -> KafkaProducer {
        let base = ["bootstrap.servers": cluster.bootstrapServers, "retry.backoff.ms": "20", "retry.backoff.max.ms": "100"]
        return try KafkaProducer(configuration: KafkaConfiguration(base.merging(extra) { _, new in new }), logger: logger)
    }

    @Test func retriableProduceErrorsAreRetried() async throws {
        let cluster = try KafkaMockCluster(logger: logger)
        try cluster.createTopic("orders", partitions: 1)
        let producer = try producer(cluster)
        let first = try await producer.send(record("orders", "warm-up"))
        #expect(first.offset == 0)

        cluster.pushRequestErrors(apiKey: Self.produceApiKey, errors: Array(repeating: KafkaMockCluster.notEnoughReplicas, count: 3))
        let report = try await TestKafka.within(.seconds(20), "send with retries") {
            try await producer.send(record("orders", "retried"))
        }
        #expect(report.partition == 0)
        #expect(report.offset == 1, "written once despite three failed attempts")
        await producer.close()
    }

    @Test func nonRetriableProduceErrorIsThrownWithItsCode() async throws {
        let cluster = try KafkaMockCluster(logger: logger)
        try cluster.createTopic("orders", partitions: 1)
        let producer = try producer(cluster)
        _ = try await producer.send(record("orders", "warm-up"))

        cluster.pushRequestErrors(apiKey: Self.produceApiKey, errors: [KafkaMockCluster.topicAuthorizationFailed])
        let error = await #expect(throws: KafkaError.self) {
            try await TestKafka.within(.seconds(20), "failing send") { try await producer.send(record("orders", "denied")) }
        }
        #expect(error?.code == KafkaMockCluster.topicAuthorizationFailed)
        #expect(error?.isRetriable == false)

        // librdkafka keeps the topic in error until its next metadata refresh: the next send
        // succeeds or fails fast with the same error, but does not hang.
        let after = try await TestKafka.within(.seconds(5), "send after the failure") {
            await TestKafka.result { try await producer.send(record("orders", "after")) }
        }
        if case .failure(let e) = after {
            #expect((e as? KafkaError)?.code == KafkaMockCluster.topicAuthorizationFailed)
        }
        await producer.close()
    }

    @Test func unreachableBrokerGivesAnErrorNotAHang() async throws {
        let producer = try KafkaProducer(
            configuration: KafkaConfiguration(["bootstrap.servers": "127.0.0.1:1", "message.timeout.ms": "1500"]),
            logger: logger)
        let start = ContinuousClock.now
        let error = await #expect(throws: KafkaError.self) {
            try await TestKafka.within(.seconds(15), "send to an unreachable broker") {
                try await producer.send(record("orders", "nowhere"))
            }
        }
        #expect(error?.code == KafkaError.messageTimedOutCode)
        #expect(error?.isRetriable == true)
        // Generous for a loaded machine; what it protects: the send fails at message.timeout.ms
        // (1.5 s), it does not wait for the broker to come back.
        #expect(ContinuousClock.now - start < .seconds(10))

        let batch = await #expect(throws: KafkaError.self) {
            try await TestKafka.within(.seconds(15), "sendAll to an unreachable broker") {
                try await producer.sendAll([record("orders", "a"), record("orders", "b")])
            }
        }
        #expect(batch?.code == KafkaError.messageTimedOutCode)
        try await TestKafka.within(.seconds(10), "close") { await producer.close(timeoutMs: 500) }
    }

    @Test func sendWhileBrokerIsDownSucceedsWhenItReturns() async throws {
        let cluster = try KafkaMockCluster(logger: logger)
        try cluster.createTopic("orders", partitions: 1)
        let producer = try producer(cluster, ["message.timeout.ms": "15000"])
        _ = try await producer.send(record("orders", "warm-up"))

        cluster.setBrokerDown(1)
        let pending = Task { try await producer.send(record("orders", "while down")) }
        // For the outage's 1.5 s the send neither completes nor fails: it waits for the broker.
        let whileDown = await TestKafka.result {
            try await TestKafka.within(.milliseconds(1_500), "the send while the broker is down") { try await pending.value }
        }
        switch whileDown {
        case .failure(let error as TestKafkaError): _ = error  // still pending, as it should be
        case .failure(let error): Issue.record("the send failed while the broker was down: \(error)")
        case .success(let report): Issue.record("the send completed while the broker was down: \(report)")
        }
        cluster.setBrokerUp(1)
        let report = try await TestKafka.within(.seconds(20), "send after the broker returns") { try await pending.value }
        #expect(report.offset == 1)
        await producer.close()
    }

    @Test func slowBrokerStillDelivers() async throws {
        let cluster = try KafkaMockCluster(logger: logger)
        try cluster.createTopic("orders", partitions: 2)
        let producer = try producer(cluster)
        // Connection and metadata in place first, so what is timed below is produce round trips.
        let warmUp = try await producer.send(record("orders", "warm-up"))
        #expect(warmUp.offset == 0)
        cluster.setRoundTripTime(broker: 1, milliseconds: 300)
        let start = ContinuousClock.now
        let reports = try await TestKafka.within(.seconds(30), "sends to a slow broker") {
            try await producer.sendAll((0..<20).map { self.record("orders", "\($0)") })
        }
        let elapsed = ContinuousClock.now - start
        // The delay really was in the path: no produce request can be answered sooner than the
        // round trip (a lower bound, so a loaded machine cannot make it fail).
        #expect(elapsed >= .milliseconds(300), "20 sends took only \(elapsed): the round-trip delay was not applied")
        // Each record written once, in order, after the warm-up (one key, so one partition).
        #expect(reports.map(\.topic) == Array(repeating: "orders", count: 20))
        #expect(reports.map(\.partition) == Array(repeating: warmUp.partition, count: 20))
        #expect(reports.map(\.offset) == Array(1...20))
        await producer.close()
    }

    @Test func consumerReadsFromTheMockCluster() async throws {
        let cluster = try KafkaMockCluster(logger: logger)
        try cluster.createTopic("orders", partitions: 2)
        let producer = try producer(cluster)
        _ = try await producer.sendAll((0..<10).map { record("orders", "\($0)") })
        await producer.close()
        let consumer = try KafkaConsumer(
            configuration: KafkaConfiguration([
                "bootstrap.servers": cluster.bootstrapServers, "group.id": TestKafka.uniqueName("g"),
                "session.timeout.ms": "6000", "heartbeat.interval.ms": "300",
            ]), logger: logger)
        try consumer.subscribe(["orders"])
        let got = try await TestKafka.collect(consumer, count: 10)
        // What was written, each record once: the values, and per partition the offsets from 0 up.
        #expect(Set(got.map { String(decoding: $0.value ?? [], as: UTF8.self) }) == Set((0..<10).map { "\($0)" }))
        for (partition, records) in Dictionary(grouping: got, by: \.partition) {
            #expect(records.map(\.offset) == Array(0..<Int64(records.count)), "partition \(partition)")
            #expect(records.allSatisfy { $0.topic == "orders" && $0.key == Array("k".utf8) })
        }
        await consumer.close()
    }
}

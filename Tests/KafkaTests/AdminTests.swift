import Foundation
import Kafka
import Testing
import TestSupport

/// The Admin API against the real broker (Tansu locally).
@Suite("Admin API against the broker", .serialized, .timeLimit(.minutes(1)))
struct AdminTests {
    let logger = TestKafka.logger()

    init() async throws { try await TestKafka.requireBroker() }

    @Test func deletedTopicVanishesAndARecreatedOneStartsAtOffsetZero() async throws {
        let topic = TestKafka.uniqueName("del")
        try await TestKafka.createTopic(topic, partitions: 1)
        let producer = try KafkaProducer(configuration: TestKafka.configuration(), logger: logger)
        for i in 0..<3 { _ = try await producer.send(KafkaOutgoingRecord(topic: topic, partition: 0, key: nil, value: Array("old \(i)".utf8))) }
        let admin = try KafkaAdmin(configuration: TestKafka.configuration(), logger: logger)

        #expect(try await admin.deleteTopics([topic]) == [topic: .deleted])
        try await TestKafka.eventually("\(topic) gone from metadata", timeout: .seconds(15)) {
            try await admin.topicPartitionCounts()[topic] == nil
        }
        #expect(try await admin.deleteTopics([topic]) == [topic: .didNotExist])

        try await TestKafka.createTopic(topic, partitions: 1)
        // A producer that wrote to the old incarnation goes on writing to the new one from offset 0.
        let report = try await producer.send(KafkaOutgoingRecord(topic: topic, partition: 0, key: nil, value: Array("new".utf8)))
        #expect(report.offset == 0)
        await producer.close()
        _ = try await admin.deleteTopics([topic])
    }

    @Test func describeConfigsReadsATopicsRetention() async throws {
        let topic = TestKafka.uniqueName("cfg")
        let admin = try KafkaAdmin(configuration: TestKafka.configuration(), logger: logger)
        let created = try await admin.createTopics([TopicSpec(name: topic, partitions: 1, configs: ["retention.ms": "3600000"])])
        #expect(created == [topic: .created])
        let described = try await admin.describeTopicConfigs([topic])
        guard case .configs(let configs)? = described[topic] else {
            Issue.record("no configs for \(topic): \(described)")
            return
        }
        #expect(configs["retention.ms"] == "3600000", "configs: \(configs)")
        _ = try await admin.deleteTopics([topic])
    }

    /// Apache Kafka answers UNKNOWN_TOPIC_OR_PARTITION for that resource; Tansu 0.6 answers an
    /// empty list. Either way no retention is reported.
    @Test func describeConfigsOfAMissingTopicReportsNoRetention() async throws {
        let topic = TestKafka.uniqueName("nocfg")
        let admin = try KafkaAdmin(configuration: TestKafka.configuration(), logger: logger)
        let described = try await admin.describeTopicConfigs([topic])
        if case .configs(let c)? = described[topic] { #expect(c["retention.ms"] == nil, "a missing topic has configs: \(c)") }
    }

    /// Tansu 0.6 reports only the configs a topic was created with (no broker defaults), so a
    /// topic created without `retention.ms` has none to read; Apache Kafka reports the default.
    @Test func describeConfigsOfATopicWithoutExplicitRetention() async throws {
        let topic = TestKafka.uniqueName("defcfg")
        try await TestKafka.createTopic(topic, partitions: 1)
        let admin = try KafkaAdmin(configuration: TestKafka.configuration(), logger: logger)
        let described = try await admin.describeTopicConfigs([topic])
        guard case .configs(let configs)? = described[topic] else {
            Issue.record("no configs for \(topic): \(described)")
            return
        }
        if let r = configs["retention.ms"] { #expect(Int64(r) != nil, "retention.ms is not a number: \(r)") }
        _ = try await admin.deleteTopics([topic])
    }
}

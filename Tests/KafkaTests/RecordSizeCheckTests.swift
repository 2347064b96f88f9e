import Foundation
import Kafka
import OrderCore
import Testing
import TestSupport

/// At start the service reads `max.message.bytes` of the topics it writes: a topic that takes less
/// than the record budget would refuse large replies, so the operator is told which and what to set.
@Suite("Record size against the topics' max.message.bytes", .timeLimit(.minutes(1)))
struct RecordSizeCheckTests {
    init() async throws { try await TestKafka.requireBroker() }

    @Test func aWrittenTopicThatTakesLessThanTheBudgetIsNamed() async throws {
        let prefix = TestKafka.uniqueName("size")
        var yaml = try String(contentsOfFile: TestSystem.repoRoot + "/topics.yaml", encoding: .utf8)
        for logical in Topics.requiredLogicalNames.keys + ["order_service_metrics"] {
            yaml = yaml.replacingOccurrences(of: "    name: \(logical)\n", with: "    name: \(prefix)_\(logical)\n")
        }
        yaml = yaml.replacingOccurrences(
            of: "    name: \(prefix)_cart_responses\n    role: response\n",
            with: "    name: \(prefix)_cart_responses\n    role: response\n    configs:\n      max.message.bytes: \"600000\"\n")
        let topics = try Topics.parse(yaml: yaml)
        let manager = TopicManager(configuration: TestKafka.configuration(), logger: TestKafka.logger())
        try await manager.ensure(topics, timeout: .seconds(30))
        let findings = await manager.recordSizeFindings(topics, maxRecordBytes: 1_048_576)
        #expect(findings.count == 1, "\(findings)")
        #expect(findings.first?.contains("topic \(prefix)_cart_responses takes records of at most 600000 bytes") == true, "\(findings)")
        #expect(findings.first?.contains("set ORDER_SERVICE_MAX_RECORD_BYTES to at most 600000") == true)
        #expect(await manager.recordSizeFindings(topics, maxRecordBytes: 600_000).isEmpty)
        let admin = try KafkaAdmin(configuration: TestKafka.configuration(), logger: TestKafka.logger())
        _ = try await admin.deleteTopics(topics.specs.map(\.name))
    }
}

import Foundation
import OrderCore
import Testing

/// docs/security.md stays in step with the code and topics.yaml.
@Suite(.timeLimit(.minutes(1)))
struct SecurityDocTests {
    @Test func everyKafkaVariableIsALibrdkafkaProperty() throws {
        let doc = try Repo.text("docs/security.md")
        let names = Set(doc.captures(of: #"\b(KAFKA_[A-Z0-9_]*[A-Z0-9])\b"#))
        #expect(names.count >= 20)
        let ignoredByService: Set<String> = [
            "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_PORT", "KAFKA_HOME", "KAFKA_OPTS", "KAFKA_HEAP_OPTS", "KAFKA_JMX_OPTS", "KAFKA_LOG4J_OPTS",
        ]
        for name in names.sorted() where !ignoredByService.contains(name) {
            let properties = try ServiceEnvironment.kafkaProperties(of: [name])
            #expect(properties.count == 1 && ServiceEnvironment.knownKafkaProperties.isSuperset(of: properties),
                    "docs/security.md: \(name) maps to \(properties.sorted()), not a known librdkafka property")
        }
        for name in ignoredByService where name != "KAFKA_BOOTSTRAP_SERVERS" {
            #expect(try ServiceEnvironment.kafkaProperties(of: [name]).isEmpty, "\(name) is documented as ignored")
        }
    }

    @Test func aclsNameEveryTopicAndGroup() throws {
        let doc = try Repo.text("docs/security.md")
        for topic in try Repo.topics().entries.values.map(\.name) {
            #expect(doc.contains("`\(topic)`") || doc.contains("--topic \(topic)"), "docs/security.md does not mention \(topic)")
        }
        #expect(doc.contains("--group \(ServiceConfiguration().groupId)"))
        // The per-instance reply groups' prefix is the one the upstream client uses.
        let upstream = try Repo.text("Sources/OrderCore/Upstream/UpstreamClient.swift")
        let prefix = try #require(upstream.captures(of: #""(order-service-replies-)\\\("#).first, "reply group prefix not found in UpstreamClient.swift")
        #expect(doc.contains("--resource-pattern-type prefixed --group \(prefix)"))
        #expect(doc.contains("ORDER_SERVICE_CREATE_TOPICS=true"))
        #expect(doc.contains("sslmode=verify-full&sslrootcert="))
        #expect(doc.contains("***"))
    }
}

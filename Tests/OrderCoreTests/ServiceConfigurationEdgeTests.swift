import Kafka
import Testing

@testable import OrderCore

/// Edge cases of reading the environment: switches, integers, empty values, KAFKA_* properties.
@Suite("ServiceConfiguration: edge cases", .timeLimit(.minutes(2)))
struct ServiceConfigurationEdgeTests {
    static let createTopics = "ORDER_SERVICE_CREATE_TOPICS"

    func message(_ env: [String: String]) -> String? {
        do {
            _ = try ServiceConfiguration.fromEnvironment(env)
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test(arguments: ["off", "OFF", "false", "False", "no", "NO", "0", " off ", "false\n", "\tno"])
    func createTopicsFalseWords(_ value: String) throws {
        #expect(try ServiceConfiguration.fromEnvironment([Self.createTopics: value]).createTopics == false)
    }

    @Test(arguments: ["on", "ON", "true", "TRUE", "yes", "Yes", "1", " on", "true "])
    func createTopicsTrueWords(_ value: String) throws {
        #expect(try ServiceConfiguration.fromEnvironment([Self.createTopics: value]).createTopics == true)
    }

    @Test func createTopicsIsOnByDefault() throws {
        #expect(try ServiceConfiguration.fromEnvironment([:]).createTopics)
    }

    @Test(arguments: ["", " ", "maybe", "2", "-1", "enabled", "of", "yes please"])
    func createTopicsOtherWordsAreRefusedWithAClearMessage(_ value: String) throws {
        let text = try #require(message([Self.createTopics: value]), "'\(value)' must be refused")
        #expect(text.contains(Self.createTopics))
        #expect(text.contains("'\(value)'"))
        #expect(text.contains("on/off"))
    }

    @Test func integersMayCarrySurroundingSpacesAndAPlusSign() throws {
        let c = try ServiceConfiguration.fromEnvironment([
            "ORDER_SERVICE_MAX_IN_FLIGHT": " 300 ", "ORDER_SERVICE_DB_POOL_SIZE": "+4", "ORDER_SERVICE_UPSTREAM_TIMEOUT_MS": "\t250",
        ])
        #expect(c.maxInFlight == 300)
        #expect(c.databasePoolSize == 4)
        #expect(c.upstreamTimeout == .milliseconds(250))
    }

    @Test(arguments: [
        "", " ", "1 000", "1_000", "1e3", "0x10", "12ms", "3.5", "--3", "+-3", "9223372036854775808", "-9223372036854775809",
        "99999999999999999999999",
    ])
    func integersThatAreNotIntegersAreRefusedNamingTheVariable(_ value: String) throws {
        let text = try #require(message(["ORDER_SERVICE_MAX_IN_FLIGHT": value]), "'\(value)' must be refused")
        #expect(text.contains("ORDER_SERVICE_MAX_IN_FLIGHT"))
        #expect(text.contains("'\(value)'"))
    }

    @Test func integerBoundsAreInclusive() throws {
        #expect(try ServiceConfiguration.fromEnvironment(["ORDER_SERVICE_MAX_IN_FLIGHT": "1"]).maxInFlight == 1)
        #expect(try ServiceConfiguration.fromEnvironment(["ORDER_SERVICE_MAX_IN_FLIGHT_BYTES": "1"]).maxInFlightBytes == 1)
        #expect(message(["ORDER_SERVICE_MAX_IN_FLIGHT_BYTES": "0"]) != nil)
        #expect(try ServiceConfiguration.fromEnvironment([:]).maxInFlightBytes == 64 << 20)
        #expect(message(["ORDER_SERVICE_MAX_IN_FLIGHT": "0"]) != nil)
        #expect(try ServiceConfiguration.fromEnvironment(["ORDER_SERVICE_PRODUCT_CACHE_MS": "0"]).productCacheStaleness == .zero)
        #expect(try ServiceConfiguration.fromEnvironment(["ORDER_SERVICE_PRODUCT_CACHE_MS": "-0"]).productCacheStaleness == .zero)
        #expect(try ServiceConfiguration.fromEnvironment(["ORDER_SERVICE_METRICS_INTERVAL_MS": "100"]).metricsInterval == .milliseconds(100))
        #expect(message(["ORDER_SERVICE_METRICS_INTERVAL_MS": "99"]) != nil)
        // The least that holds a full cart or order reply (ReplyRouting.minimumMaxRecordBytes).
        #expect(try ServiceConfiguration.fromEnvironment(["ORDER_SERVICE_MAX_RECORD_BYTES": "524288"]).maxRecordBytes == 524_288)
        #expect(message(["ORDER_SERVICE_MAX_RECORD_BYTES": "524287"]) != nil)
        #expect(message(["ORDER_SERVICE_PROBATION_WINDOW_S": "0"]) != nil)
    }

    @Test func executorThreadsDefaultToDispatchAndAreBounded() throws {
        #expect(try ServiceConfiguration.fromEnvironment([:]).executorThreads == 0)
        #expect(try ServiceConfiguration.fromEnvironment(["ORDER_SERVICE_EXECUTOR_THREADS": "1"]).executorThreads == 1)
        #expect(try ServiceConfiguration.fromEnvironment(["ORDER_SERVICE_EXECUTOR_THREADS": "64"]).executorThreads == 64)
        #expect(message(["ORDER_SERVICE_EXECUTOR_THREADS": "65"])?.contains("at most 64") == true)
        #expect(message(["ORDER_SERVICE_EXECUTOR_THREADS": "-1"])?.contains("ORDER_SERVICE_EXECUTOR_THREADS") == true)
    }

    @Test func theLargestIntegerIsAcceptedWithoutTrapping() throws {
        let max = String(Int.max)
        let c = try ServiceConfiguration.fromEnvironment([
            "ORDER_SERVICE_UPSTREAM_TIMEOUT_MS": max, "ORDER_SERVICE_PROBATION_WINDOW_S": max, "ORDER_SERVICE_IDEMPOTENCY_RETENTION_HOURS": max,
        ])
        #expect(c.upstreamTimeout == .milliseconds(Int.max))
        #expect(c.probationWindow == .seconds(Int.max))
        #expect(c.idempotencyRetentionHours == Int.max)
    }

    @Test func emptyTextValuesMeanTheDefault() throws {
        let d = try ServiceConfiguration.fromEnvironment([:])
        let c = try ServiceConfiguration.fromEnvironment([
            "KAFKA_BOOTSTRAP_SERVERS": "", "DATABASE_URL": "", "ORDER_SERVICE_TOPICS_FILE": "", "ORDER_SERVICE_GROUP_ID": "",
            "ORDER_SERVICE_INSTANCE_ID": "", "ORDER_SERVICE_TEST_CRASH_ON": "", "ORDER_SERVICE_REPLY_TO_ALLOW": "",
        ])
        #expect(c.bootstrapServers == d.bootstrapServers)
        #expect(c.databaseURL == d.databaseURL)
        #expect(c.topicsFile == d.topicsFile)
        #expect(c.groupId == d.groupId)
        #expect(!c.instanceId.isEmpty)
        #expect(c.testCrashOn == nil)
        #expect(c.replyToAllowList == [])
    }

    @Test func anEmptyHealthFileSwitchesTheHealthFileOff() throws {
        #expect(try ServiceConfiguration.fromEnvironment([:]).healthFile == "/tmp/order-service.alive")
        #expect(try ServiceConfiguration.fromEnvironment(["ORDER_SERVICE_HEALTH_FILE": ""]).healthFile == nil)
        #expect(try ServiceConfiguration.fromEnvironment(["ORDER_SERVICE_HEALTH_FILE": "/run/alive"]).healthFile == "/run/alive")
    }

    @Test func theReplyToAllowListIsTrimmedAndEmptyEntriesDropped() throws {
        let c = try ServiceConfiguration.fromEnvironment(["ORDER_SERVICE_REPLY_TO_ALLOW": " a-replies , ,b.*,, "])
        #expect(c.replyToAllowList == ["a-replies", "b.*"])
    }

    @Test func kafkaVariablesMapToLibrdkafkaNames() throws {
        let c = try ServiceConfiguration.fromEnvironment([
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u",
            "KAFKA_LOG_LEVEL": "3", "KAFKA_ENABLED_EVENTS": "1", "KAFKA_": "ignored", "kafka_lower_case": "ignored",
            "KAFKA_PORT": "9092", "KAFKA_HOME": "/opt/kafka", "KAFKA_OPTS": "-X", "KAFKA_JMX_OPTS": "-Y", "KAFKA_LOG4J_OPTS": "-Z",
            "KAFKA_BOOTSTRAP_SERVERS": "b1:9092,b2:9092", "NOT_KAFKA_ACKS": "0",
        ])
        #expect(c.kafka.properties == [
            "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.username": "u",
            "log_level": "3", "enabled_events": "1",
        ])
        #expect(c.bootstrapServers == "b1:9092,b2:9092")
    }

    @Test func kafkaVariablesOverrideTheServicesOwnClientProperties() throws {
        var c = try ServiceConfiguration.fromEnvironment([
            "KAFKA_BOOTSTRAP_SERVERS": "b1:9092", "ORDER_SERVICE_INSTANCE_ID": "pod-1", "KAFKA_CLIENT_ID": "custom",
            "KAFKA_FETCH_WAIT_MAX_MS": "20",
        ])
        #expect(c.kafkaBase["bootstrap.servers"] == "b1:9092")
        #expect(c.kafkaBase["client.id"] == "custom")
        #expect(c.kafkaBase["fetch.wait.max.ms"] == "20")
        c.kafka = KafkaConfiguration()
        #expect(c.kafkaBase["client.id"] == "order-service-pod-1")
    }
}

import Kafka
import Testing
import TestSupport

@Suite("Configuration and version", .timeLimit(.minutes(1)))
struct ConfigurationTests {
    let logger = TestKafka.logger()

    @Test func loadedLibrdkafkaIsRecentEnough() throws {
        #expect(LibRdKafka.versionNumber >= 0x0201_0000, "loaded librdkafka \(LibRdKafka.versionString)")
        #expect(LibRdKafka.versionString.hasPrefix("2."))
        try LibRdKafka.requireSupportedVersion()
    }

    @Test func environmentNamesMapToLibrdkafkaProperties() throws {
        let env = [
            "KAFKA_BOOTSTRAP_SERVERS": "b1:9092,b2:9092",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SSL_CA_LOCATION": "/etc/ca.pem",
            "KAFKA_LOG_LEVEL": "3",  // librdkafka spells this one log_level
            "KAFKA_TOPICS_FILE": "topics.yaml",  // the application's own, excluded
            "KAFKA_": "ignored",
            "XKAFKA_ACKS": "1",
            "PATH": "/bin",
        ]
        let config = KafkaConfiguration.fromEnvironment(env, excluding: ["KAFKA_TOPICS_FILE"])
        #expect(
            config.properties == [
                "bootstrap.servers": "b1:9092,b2:9092",
                "sasl.mechanism": "SCRAM-SHA-512",
                "security.protocol": "SASL_SSL",
                "ssl.ca.location": "/etc/ca.pem",
                "log_level": "3",
            ])

        let custom = KafkaConfiguration.fromEnvironment(["APP_KAFKA_CLIENT_ID": "svc"], prefix: "APP_KAFKA_")
        #expect(custom.properties == ["client.id": "svc"])
    }

    @Test func environmentConfigurationIsAcceptedByLibrdkafka() async throws {
        let env = ["KAFKA_CLIENT_ID": "svc", "KAFKA_LOG_LEVEL": "3", "KAFKA_SOCKET_KEEPALIVE_ENABLE": "true"]
        let config = KafkaConfiguration.fromEnvironment(env)
        #expect(config.properties == ["client.id": "svc", "log_level": "3", "socket.keepalive.enable": "true"])
        // Constructing a client is where librdkafka validates every property (it throws otherwise).
        let producer = try KafkaProducer(configuration: config, logger: logger)
        await producer.close(timeoutMs: 500)
        let consumer = try KafkaConsumer(configuration: config.merging(KafkaConfiguration(["group.id": "g"])), logger: logger)
        try await TestKafka.within(.seconds(10), "closing an unsubscribed consumer") { await consumer.close() }
        _ = try KafkaAdmin(configuration: config, logger: logger)
        // The same path does reach librdkafka's validation: a bad value for one of these names is refused.
        let bad = KafkaConfiguration.fromEnvironment(env.merging(["KAFKA_SOCKET_KEEPALIVE_ENABLE": "banana"]) { _, new in new })
        let error = #expect(throws: KafkaError.self) { _ = try KafkaProducer(configuration: bad, logger: logger) }
        #expect(error?.code == KafkaError.invalidArgumentCode)
        #expect(error?.message.contains("socket.keepalive.enable") == true, "\(String(describing: error))")
    }

    @Test func parsingNameValuePairs() throws {
        let config = try KafkaConfiguration.parsing(["sasl.username=alice", "sasl.password=a=b=c", "client.id="])
        #expect(config.properties == ["sasl.username": "alice", "sasl.password": "a=b=c", "client.id": ""])
        #expect(config["sasl.username"] == "alice")

        for bad in ["no-equals-sign", "=value", ""] {
            #expect(throws: KafkaError.self, "'\(bad)'") { try KafkaConfiguration.parsing([bad]) }
        }
    }

    @Test func mergingLaterWins() {
        let merged = KafkaConfiguration(["a": "1", "b": "2"]).merging(KafkaConfiguration(["b": "3", "c": "4"]))
        #expect(merged.properties == ["a": "1", "b": "3", "c": "4"])
    }

    @Test func invalidPropertiesFailAtConstruction() throws {
        let badName = TestKafka.configuration(["no.such.property": "1"])
        let badValue = TestKafka.configuration(["acks": "banana"])
        for config in [badName, badValue] {
            let errors: [KafkaError?] = [
                #expect(throws: KafkaError.self) { try KafkaProducer(configuration: config, logger: logger) },
                #expect(throws: KafkaError.self) {
                    try KafkaConsumer(configuration: config.merging(KafkaConfiguration(["group.id": "g"])), logger: logger)
                },
                #expect(throws: KafkaError.self) { try KafkaAdmin(configuration: config, logger: logger) },
            ]
            for error in errors {
                #expect(error?.code == KafkaError.invalidArgumentCode)
                #expect(error?.code == KafkaError.configuration("x").code)
            }
        }
        let error = #expect(throws: KafkaError.self) { try KafkaProducer(configuration: badName, logger: logger) }
        #expect(error?.message.contains("no.such.property") == true)
    }

    @Test func redactedMasksSecrets() {
        let config = KafkaConfiguration([
            "sasl.password": "p", "ssl.key.password": "p", "ssl.key.pem": "-----BEGIN PRIVATE KEY-----",
            "sasl.oauthbearer.client.secret": "s", "sasl.jaas.config": "j", "sasl.oauthbearer.config": "principal=x secret=y",
            "sasl.username": "alice", "bootstrap.servers": "b:9092",
        ])
        let r = config.redacted
        for key in ["sasl.password", "ssl.key.password", "ssl.key.pem", "sasl.oauthbearer.client.secret",
                    "sasl.jaas.config", "sasl.oauthbearer.config"] {
            #expect(r[key] == "***", "\(key)")
        }
        #expect(r["sasl.username"] == "alice")
        #expect(r["bootstrap.servers"] == "b:9092")
    }

    @Test func errorsCarryCodesAndRetriability() {
        #expect(KafkaError.timedOut("x").isRetriable)
        #expect(KafkaError.closed("producer").code == KafkaError.destroyedCode)
        #expect(!KafkaError.configuration("x").isRetriable)
    }
}

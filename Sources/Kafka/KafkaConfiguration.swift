/// librdkafka properties as plain strings: every property librdkafka knows can be set, including
/// all security settings (`security.protocol`, `sasl.*`, `ssl.*`), without code changes.
public struct KafkaConfiguration: Sendable, Equatable {
    public var properties: [String: String]

    public init(_ properties: [String: String] = [:]) { self.properties = properties }

    public subscript(key: String) -> String? {
        get { properties[key] }
        set { properties[key] = newValue }
    }

    /// Later wins: `defaults.merging(overrides)`.
    public func merging(_ other: KafkaConfiguration) -> KafkaConfiguration {
        KafkaConfiguration(properties.merging(other.properties) { _, new in new })
    }

    /// Properties from the environment: `KAFKA_SASL_MECHANISM=SCRAM-SHA-512` becomes
    /// `sasl.mechanism`. Names are lower-cased and `_` becomes `.`, except for the few librdkafka
    /// names spelled with `_` (`KAFKA_LOG_LEVEL` → `log_level`, `enabled_events`).
    /// Variables listed in `excluding` are the application's own and are left alone.
    public static func fromEnvironment(
        _ environment: [String: String], prefix: String = "KAFKA_", excluding: Set<String> = []
    ) -> KafkaConfiguration {
        var props: [String: String] = [:]
        for (name, value) in environment where name.hasPrefix(prefix) && !excluding.contains(name) {
            var key = name.dropFirst(prefix.count).lowercased().replacingOccurrences(of: "_", with: ".")
            key = underscoredNames[key] ?? key
            if !key.isEmpty { props[key] = value }
        }
        return KafkaConfiguration(props)
    }

    /// librdkafka properties (settable as strings) whose names contain `_`.
    private static let underscoredNames = ["log.level": "log_level", "enabled.events": "enabled_events"]

    /// Parses `name=value` pairs (from repeated `--kafka-property` flags).
    public static func parsing(_ pairs: [String]) throws -> KafkaConfiguration {
        var props: [String: String] = [:]
        for pair in pairs {
            guard let eq = pair.firstIndex(of: "="), eq != pair.startIndex else {
                throw KafkaError.configuration("expected name=value, got '\(pair)'")
            }
            props[String(pair[..<eq])] = String(pair[pair.index(after: eq)...])
        }
        return KafkaConfiguration(props)
    }

    /// Producer defaults: idempotent, acknowledged by all replicas, tiny linger for request/reply.
    public static let producerDefaults = KafkaConfiguration([
        "enable.idempotence": "true",
        "acks": "all",
        "linger.ms": "2",
        "message.timeout.ms": "30000",
        "socket.nagle.disable": "true",
    ])

    /// Consumer-group defaults. Offsets are stored by the application only after a record is
    /// fully handled (`enable.auto.offset.store=false`); the background committer then commits
    /// only those stored offsets. `fetch.wait.max.ms` is small because some brokers (Tansu) hold a
    /// long-poll fetch for about half of it even when data is there.
    public static let consumerDefaults = KafkaConfiguration([
        "enable.auto.commit": "true",
        "enable.auto.offset.store": "false",
        "auto.commit.interval.ms": "500",
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": "10",
        "fetch.error.backoff.ms": "50",
        "session.timeout.ms": "10000",
        "heartbeat.interval.ms": "1000",
        "max.poll.interval.ms": "300000",
        "socket.nagle.disable": "true",
        "topic.metadata.refresh.interval.ms": "10000",
    ])

    /// Values whose names suggest secrets are masked, for logging a configuration.
    public var redacted: [String: String] {
        properties.reduce(into: [:]) { out, kv in
            let k = kv.key.lowercased()
            let secret = ["password", "secret", "jaas", "token", "ssl.key", "ssl_key", "oauthbearer.config", "credential"]
                .contains { k.contains($0) } || k.hasSuffix(".key")
            out[kv.key] = secret ? "***" : kv.value
        }
    }
}

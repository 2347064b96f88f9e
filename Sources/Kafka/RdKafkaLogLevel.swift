import Logging

/// How a librdkafka log line (syslog level, facility, message) is logged.
enum RdKafkaLogLevel {
    /// Syslog levels: ≤ 3 error, 4 warning, 5–6 info, 7 debug. One exception: the `CONFWARN` that
    /// a property of the other client kind is ignored. One property set reaches every handle of a
    /// process by design (`KAFKA_*` variables, `--kafka-property`), so an operator who sets
    /// `KAFKA_SESSION_TIMEOUT_MS` would otherwise see the producer and admin handles warn at every
    /// start about a setting that does exactly what was meant; other `CONFWARN`s (deprecated or
    /// conflicting properties) stay warnings.
    static func level(syslog: Int32, facility: String, message: String) -> Logger.Level {
        if facility == "CONFWARN", isOtherKindProperty(message) { return .debug }
        return syslog <= 3 ? .error : syslog <= 4 ? .warning : syslog <= 6 ? .info : .debug
    }

    private static func isOtherKindProperty(_ message: String) -> Bool {
        message.contains("is a consumer property and will be ignored by this producer instance")
            || message.contains("is a producer property and will be ignored by this consumer instance")
    }
}

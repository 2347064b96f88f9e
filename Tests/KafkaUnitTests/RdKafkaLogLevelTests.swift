import Logging
import Synchronization
import Testing

@testable import Kafka

@Suite("librdkafka log lines: their levels")
struct RdKafkaLogLevelTests {
    @Test func syslogLevelsMapToLoggerLevels() {
        #expect(RdKafkaLogLevel.level(syslog: 3, facility: "FAIL", message: "x") == .error)
        #expect(RdKafkaLogLevel.level(syslog: 4, facility: "CONFWARN", message: "`x` is deprecated") == .warning)
        #expect(RdKafkaLogLevel.level(syslog: 6, facility: "PROTOERR", message: "x") == .info)
        #expect(RdKafkaLogLevel.level(syslog: 7, facility: "FETCH", message: "x") == .debug)
    }

    @Test func aPropertyOfTheOtherClientKindIsNoWarning() {
        let consumerOnly = "[thrd:app]: Configuration property session.timeout.ms is a consumer property and will be ignored by this producer instance"
        let producerOnly = "[thrd:app]: Configuration property linger.ms is a producer property and will be ignored by this consumer instance"
        #expect(RdKafkaLogLevel.level(syslog: 4, facility: "CONFWARN", message: consumerOnly) == .debug)
        #expect(RdKafkaLogLevel.level(syslog: 4, facility: "CONFWARN", message: producerOnly) == .debug)
        // The same words under another facility are not the configuration warning.
        #expect(RdKafkaLogLevel.level(syslog: 4, facility: "OTHER", message: consumerOnly) == .warning)
    }

    /// The whole path: a producer given a consumer property (as `KAFKA_SESSION_TIMEOUT_MS` gives
    /// every handle) logs librdkafka's remark, but not as a warning. No broker needed.
    @Test func aProducerGivenAConsumerPropertyDoesNotWarn() async throws {
        let lines = LogLines()
        let logger = Logger(label: "test") { _ in
            var handler = LinesHandler(lines: lines)
            handler.logLevel = .trace
            return handler
        }
        let producer = try KafkaProducer(
            configuration: KafkaConfiguration(["bootstrap.servers": "127.0.0.1:9", "session.timeout.ms": "6000"]), logger: logger)
        await producer.close(timeoutMs: 100)
        let remarks = lines.all.filter { $0.message.contains("session.timeout.ms") }
        #expect(!remarks.isEmpty)  // librdkafka did say it
        #expect(remarks.allSatisfy { $0.level == .debug })
    }
}

private final class LogLines: Sendable {
    private let lines = Mutex<[(level: Logger.Level, message: String)]>([])
    func append(_ level: Logger.Level, _ message: String) { lines.withLock { $0.append((level, message)) } }
    var all: [(level: Logger.Level, message: String)] { lines.withLock { $0 } }
}

private struct LinesHandler: LogHandler {
    let lines: LogLines
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) { lines.append(event.level, "\(event.message)") }
}

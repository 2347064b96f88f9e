import Foundation
import Kafka
import Logging
import Synchronization

/// Helpers for tests that talk to a Kafka broker (Tansu locally, `KAFKA_BOOTSTRAP_SERVERS` elsewhere).
/// A missing broker makes a test fail, never skip.
public enum TestKafka {
    public static var bootstrapServers: String {
        let env = ProcessInfo.processInfo.environment["KAFKA_BOOTSTRAP_SERVERS"] ?? ""
        return env.isEmpty ? "127.0.0.1:9092" : env
    }

    /// `prefix-<uuid>`: unique topic and group names keep tests independent on a shared broker.
    public static func uniqueName(_ prefix: String) -> String { "\(prefix)-\(UUID().uuidString.lowercased())" }

    /// Logs at `KAFKA_TEST_LOG_LEVEL` when set, else at `level` (tests that provoke connection
    /// failures pass `.critical`).
    public static func logger(_ label: String = "kafka-test", level: Logger.Level = .error) -> Logger {
        var logger = Logger(label: label)
        let env = ProcessInfo.processInfo.environment["KAFKA_TEST_LOG_LEVEL"].flatMap { Logger.Level(rawValue: $0) }
        logger.logLevel = env ?? level
        return logger
    }

    /// `bootstrap.servers` plus `extra`.
    public static func configuration(_ extra: [String: String] = [:]) -> KafkaConfiguration {
        KafkaConfiguration(["bootstrap.servers": bootstrapServers].merging(extra) { _, new in new })
    }

    /// Consumer-group member settings that keep group tests fast. (Tansu answers a JoinGroup after
    /// about half the session timeout of the group's first member, so this sets the pace.)
    public static func consumerConfiguration(group: String, _ extra: [String: String] = [:]) -> KafkaConfiguration {
        configuration(["group.id": group, "session.timeout.ms": "4000", "heartbeat.interval.ms": "250"].merging(extra) { _, new in new })
    }

    /// Throws (so the test fails) unless a broker answers a metadata request within a few seconds.
    /// Once it did not, later calls fail at once instead of waiting again.
    public static func requireBroker(timeoutMs: Int32 = 5_000) async throws {
        if let failure = brokerFailure.withLock({ $0 }) { throw TestKafkaError(failure) }
        do {
            let admin = try KafkaAdmin(configuration: configuration(), logger: logger(level: .critical))
            _ = try await admin.topicPartitionCounts(timeoutMs: timeoutMs)
        } catch {
            let failure = "no Kafka broker answers at \(bootstrapServers) (start one: bash deploy/local/broker.sh start): \(error)"
            brokerFailure.withLock { $0 = failure }
            throw TestKafkaError(failure)
        }
    }
    private static let brokerFailure = Mutex<String?>(nil)

    /// Creates a topic and waits until the cluster's metadata lists all its partitions.
    public static func createTopic(_ name: String, partitions: Int32) async throws {
        let admin = try KafkaAdmin(configuration: configuration(), logger: logger())
        let outcome = try await admin.createTopics([TopicSpec(name: name, partitions: partitions)])
        switch outcome[name] {
        case .created?, .alreadyExisted?: break
        case .failed(let error)?: throw error
        case nil: throw TestKafkaError("CreateTopics gave no result for \(name)")
        }
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if try await admin.topicPartitionCounts()[name] == partitions { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestKafkaError("topic \(name) did not show \(partitions) partitions in metadata")
    }

    /// Reads `count` records from a consumer whose `records` nobody else reads. On timeout the
    /// reader stays attached (the stream ends when the consumer closes) and this throws.
    public static func collect(_ consumer: KafkaConsumer, count: Int, timeout: Duration = .seconds(20)) async throws
        -> [KafkaRecord]
    {
        let collector = RecordCollector(consumer, limit: count)
        return try await collector.waitFor(count: count, timeout: timeout)
    }

    /// Runs `body`, failing with an error (instead of hanging) when it takes longer than `timeout`.
    /// A body that never returns is left behind.
    public static func within<T: Sendable>(
        _ timeout: Duration, _ what: String, _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let once = Mutex<CheckedContinuation<T, any Error>?>(nil)
        return try await withCheckedThrowingContinuation { (cont: CheckedContinuation<T, any Error>) in
            once.withLock { $0 = cont }
            let finish: @Sendable (Result<T, any Error>) -> Void = { result in
                once.withLock { c in
                    c?.resume(with: result)
                    c = nil
                }
            }
            Task { finish(await result(of: body)) }
            Task {
                try? await Task.sleep(for: timeout)
                finish(.failure(TestKafkaError("\(what) did not finish within \(timeout)")))
            }
        }
    }

    /// `Result(catching:)` for async bodies.
    public static func result<T>(of body: () async throws -> T) async -> Result<T, any Error> {
        do { return .success(try await body()) } catch { return .failure(error) }
    }

    /// Polls `condition` every 10 ms until it holds; throws after `timeout`.
    public static func eventually(
        _ what: String, timeout: Duration = .seconds(20), _ condition: @Sendable () async throws -> Bool
    ) async throws {
        let deadline = ContinuousClock.now + timeout
        while true {
            if try await condition() { return }
            if ContinuousClock.now >= deadline { throw TestKafkaError("timed out after \(timeout) waiting for \(what)") }
            try await Task.sleep(for: .milliseconds(10))
        }
    }
}

public struct TestKafkaError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Reads a consumer's `records` in a background task, runs `handler` on each record in order (for
/// example to store its offset) and keeps what it read. `stop()` ends the reading after the
/// current record's handler (cancelling the read ends the consumer's stream for good).
public final class RecordCollector: Sendable {
    private let state = Mutex<[KafkaRecord]>([])
    private let task = Mutex<Task<Void, Never>?>(nil)

    public init(
        _ consumer: KafkaConsumer, limit: Int = .max,
        handler: @escaping @Sendable (KafkaRecord) async throws -> Void = { _ in }
    ) {
        let t = Task { [self] in
            guard limit > 0 else { return }
            for await record in consumer.records {
                do { try await handler(record) } catch { reportHandlerFailure("record handler failed: \(error)") }
                let n = self.state.withLock { $0.append(record); return $0.count }
                if n >= limit { return }
            }
        }
        task.withLock { $0 = t }
    }

    /// Everything read so far.
    public var records: [KafkaRecord] { state.withLock { $0 } }
    public var count: Int { state.withLock { $0.count } }

    /// Waits until at least `count` records were read; returns all read so far.
    @discardableResult
    public func waitFor(count: Int, timeout: Duration = .seconds(20)) async throws -> [KafkaRecord] {
        try await TestKafka.eventually("\(count) records (have \(self.count))", timeout: timeout) { self.count >= count }
        return records
    }

    /// Stops reading (the consumer's stream ends) and waits for the reader to finish.
    public func stop() async {
        let t = task.withLock { $0 }
        t?.cancel()
        await t?.value
    }
}

/// TestSupport does not link Swift Testing: handler failures are printed, and the caller's
/// assertions on the collected records catch their consequences.
private func reportHandlerFailure(_ message: String) {
    FileHandle.standardError.write(Data("RecordCollector: \(message)\n".utf8))
}

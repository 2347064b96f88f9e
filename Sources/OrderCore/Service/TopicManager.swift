import Kafka
import Logging
import Synchronization

/// Creates the topics of topics.yaml that the cluster lacks, and reports differences.
public final class TopicManager: Sendable {
    let configuration: KafkaConfiguration
    let logger: Logger

    /// One admin client for the manager's lifetime (the service checks every 5 s).
    private let adminClient = Mutex<KafkaAdmin?>(nil)

    public init(configuration: KafkaConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    private func admin() throws -> KafkaAdmin {
        try adminClient.withLock { a in
            if let a { return a }
            let made = try KafkaAdmin(configuration: configuration, logger: logger)
            a = made
            return made
        }
    }

    public struct Report: Sendable {
        public var missing: [String] = []
        public var created: [String] = []
        public var partitionMismatch: [(topic: String, declared: Int32, actual: Int32)] = []
    }

    public func check(_ topics: Topics) async throws -> Report {
        let existing = try await admin().topicPartitionCounts()
        var report = Report()
        for spec in topics.specs {
            if let n = existing[spec.name] {
                if n != spec.partitions { report.partitionMismatch.append((spec.name, spec.partitions, n)) }
            } else {
                report.missing.append(spec.name)
            }
        }
        return report
    }

    /// Compares the request topics' retention with the idempotency retention (contract 9.1).
    /// Never throws: a broker that does not answer DescribeConfigs gives `unreadable` findings.
    public func retentionFindings(_ topics: Topics, idempotencyRetentionHours hours: Int) async -> [RetentionCheck.Finding] {
        let names = topics.entries.values.filter { $0.role == .request }.map(\.name)
        let described: [String: KafkaAdmin.ConfigsOutcome]?
        var failure: String?
        do { described = try await admin().describeTopicConfigs(names, timeoutMs: 10_000) } catch {
            described = nil
            failure = "DescribeConfigs failed: \(error)"
        }
        return RetentionCheck.findings(RetentionCheck.retentions(of: names, described: described, failure: failure), idempotencyRetentionHours: hours)
    }

    /// Logs each finding: a replay risk as an error (one per topic, with both values and what to
    /// change), an unreadable retention as a notice.
    public func warnAboutRetention(_ topics: Topics, idempotencyRetentionHours hours: Int) async {
        for f in await retentionFindings(topics, idempotencyRetentionHours: hours) {
            if f.isReplayRisk { logger.error("\(f.message)") } else { logger.notice("\(f.message)") }
        }
    }

    /// Topics the service writes whose `max.message.bytes` is below `maxRecordBytes`: a record
    /// the budget allows could be refused there. One message per topic; none when the broker
    /// does not say (Tansu reports only configs set at creation) or DescribeConfigs fails.
    public func recordSizeFindings(_ topics: Topics, maxRecordBytes: Int) async -> [String] {
        let written = topics.entries.values.filter { $0.role != .request }.map(\.name).sorted()
        guard let described = try? await admin().describeTopicConfigs(written, timeoutMs: 10_000) else { return [] }
        return written.compactMap { name in
            guard case .configs(let configs)? = described[name], let limit = configs["max.message.bytes"].flatMap({ Int($0) }),
                limit < maxRecordBytes
            else { return nil }
            return "topic \(name) takes records of at most \(limit) bytes (max.message.bytes), but ORDER_SERVICE_MAX_RECORD_BYTES "
                + "is \(maxRecordBytes): large replies and events could be refused there; set ORDER_SERVICE_MAX_RECORD_BYTES to at most \(limit)"
        }
    }

    /// Retries while the cluster is unreachable; gives up after `timeout` (nil: never, as the
    /// service does at start-up; the `topics apply` command gives up so a broken Job fails).
    @discardableResult
    public func ensure(_ topics: Topics, timeout: Duration? = nil, warnMismatches: Bool = true) async throws -> Report {
        var backoff = Backoff(initial: .milliseconds(200), maximum: .seconds(5))
        let deadline = timeout.map { ContinuousClock.now + $0 }
        while true {
            do {
                var report = try await check(topics)
                let outcome = try await admin().createTopics(topics.specs.filter { report.missing.contains($0.name) })
                for (name, result) in outcome.sorted(by: { $0.key < $1.key }) {
                    switch result {
                    case .created: report.created.append(name); logger.info("created topic \(name)")
                    case .alreadyExisted: break
                    case .failed(let e): throw e
                    }
                }
                for m in report.partitionMismatch where warnMismatches {
                    logger.warning("topic \(m.topic) has \(m.actual) partitions, topics.yaml declares \(m.declared)")
                }
                return report
            } catch {
                if Task.isCancelled { throw error }
                if let deadline, ContinuousClock.now + backoff.current > deadline { throw error }
                logger.warning("topic set-up failed, retrying in \(backoff.current): \(error)")
                // A cancelled sleep throws, which ends the retries.
                try await Task.sleep(for: backoff.next())
            }
        }
    }
}

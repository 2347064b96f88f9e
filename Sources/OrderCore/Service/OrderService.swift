import Foundation
import Kafka
import Logging
import Postgres
import ServiceLifecycle
import Synchronization

/// The order service: wires the Kafka clients, PostgreSQL, the pipeline and the dispatcher, and
/// runs until a graceful shutdown (SIGTERM/SIGINT through ServiceLifecycle), which drains: stop
/// fetching, finish in-flight records, reply, commit, leave the group, send the outbox, flush.
public final class OrderService: Service, Sendable {
    public let config: ServiceConfiguration
    private let logger: Logger

    public init(configuration: ServiceConfiguration, logger: Logger) {
        self.config = configuration
        self.logger = logger
    }

    public func run() async throws {
        let topics = try Topics.load(path: config.topicsFile)
        let dangerous = ReplyRouting.dangerousAllowListEntries(config.replyToAllowList, topics: topics)
        guard dangerous.isEmpty else {
            throw ConfigurationError(
                "ORDER_SERVICE_REPLY_TO_ALLOW entries match the service's own topics, which are not response topics: "
                    + dangerous.map { "\($0.entry) matches \($0.topic)" }.joined(separator: ", "))
        }
        let base = config.kafkaBase
        logger.info("starting", metadata: [
            "kafka": "\(config.bootstrapServers)", "database": "\(config.postgres.redactedURL)",
            "group": "\(config.groupId)", "instance": "\(config.instanceId)", "librdkafka": "\(LibRdKafka.versionString)",
        ])

        if config.createTopics { try await TopicManager(configuration: base, logger: logger).ensure(topics) }

        let db = PostgresClient(configuration: config.postgres, logger: logger)
        try await retrying("database migration") {
            _ = try await MigrationRunner(client: db, logger: self.logger, table: OrderSchema.migrationsTable).migrate(OrderSchema.migrations)
        }
        let store = OrderStore(db: db)
        // Before the group consumer subscribes: its first assignment must know whether the
        // previous run of this group died (the crash-loop breaker).
        let registry = RunRegistry(
            store: RunStore(db: db), groupId: config.groupId, runId: config.runId, window: config.probationWindow, logger: logger)
        try await retrying("run registration") { try await registry.start() }
        #if DEBUG
        if config.testCrashOn != nil {
            logger.warning("ORDER_SERVICE_TEST_CRASH_ON is set: requests containing it crash the process (tests only)")
        }
        if config.testWedgeOn != nil {
            logger.warning("ORDER_SERVICE_TEST_WEDGE_ON is set: requests containing it are never answered (tests only)")
        }
        #else
        if config.testCrashOn != nil || config.testWedgeOn != nil {
            logger.warning("ORDER_SERVICE_TEST_CRASH_ON / ORDER_SERVICE_TEST_WEDGE_ON are ignored: test switches exist in debug builds only")
        }
        #endif
        var producerConfig = base
        if config.kafka["message.max.bytes"] == nil { producerConfig["message.max.bytes"] = String(config.maxRecordBytes) }
        let producer = try RenewingProducer(configuration: producerConfig, logger: logger)
        let upstream = try UpstreamClient(
            producer: producer, consumerConfiguration: base,
            replyTopics: [topics.productReplies, topics.inventoryCheckReplies],
            instanceId: config.instanceId, timeout: config.upstreamTimeout, logger: logger)
        try await retrying("upstream reply consumer") { try await upstream.start() }
        let metrics = ServiceMetrics()
        let catalog = CoalescingProductCatalog(
            upstream: KafkaProductCatalog(client: upstream, topics: topics), window: config.productCoalesceWindow,
            maxStaleness: config.productCacheStaleness)
        let relay = OutboxRelay(store: store, producer: producer, logger: logger)
        let pipeline = RequestPipeline(
            topics: topics, routing: ReplyRouting(
                topics: topics, allowList: config.replyToAllowList, maxRecordBytes: config.maxRecordBytes, groupId: config.groupId),
            catalog: catalog, addItemCatalog: RecentProductCatalog(catalog),
            inventory: KafkaInventoryChecker(client: upstream, topics: topics),
            store: store, outboxWritten: { relay.notify() }, metrics: metrics,
            replyTopics: ReplyTopicCheck { try await producer.topicPartitionCounts() }, eventSource: config.eventSource,
            logger: logger, crashOn: config.testCrashOn.map { Array($0.utf8) }, wedgeOn: config.testWedgeOn.map { Array($0.utf8) })

        let consumerRef = LockedBox<KafkaConsumer?>(nil)
        var dispatcherConfig = Dispatcher.Configuration()
        dispatcherConfig.maxInFlight = config.maxInFlight
        dispatcherConfig.probationRecords = config.probationRecords
        dispatcherConfig.probationDuration = config.probationWindow
        dispatcherConfig.poisonAfter = config.probationCrashes
        let logger = self.logger
        let dispatcher = Dispatcher(
            handler: pipeline,
            effects: Dispatcher.Effects(
                send: { records in _ = try await producer.sendAll(records) },
                storeOffset: { tp, next in
                    do { try consumerRef.withLock { $0 }?.store(tp, nextOffset: next) } catch {
                        logger.warning("offset store failed: \(error)")
                    }
                },
                setPaused: { tps, pause in
                    guard let c = consumerRef.withLock({ $0 }) else { return }
                    logger.info(pause ? "backlog high: pausing fetch" : "backlog drained: resuming fetch")
                    try? pause ? c.pause(tps) : c.resume(tps)
                }),
            configuration: dispatcherConfig, crashGuard: registry.crashGuard, logger: logger)

        var consumerConfig = base
        consumerConfig["group.id"] = config.groupId
        // The rebalance timeout: how long a rebalance may wait for members. Our poll loop never
        // stalls longer than a revoke drain (30 s), so a minute bounds a stuck rebalance.
        if config.kafka["max.poll.interval.ms"] == nil { consumerConfig["max.poll.interval.ms"] = "60000" }
        // A member that died without leaving holds its partitions this long (6 s is the
        // broker-side minimum by default).
        if config.kafka["session.timeout.ms"] == nil { consumerConfig["session.timeout.ms"] = "6000" }
        // Statistics feed the metrics records and readiness (the group state): with a health
        // file at least every 5 s.
        if config.kafka["statistics.interval.ms"] == nil {
            var ms: Int64?
            if topics.metricsTopic != nil { ms = max(1_000, config.metricsInterval.components.seconds * 1_000) }
            if config.healthFile != nil { ms = min(ms ?? 5_000, 5_000) }
            if let ms { consumerConfig["statistics.interval.ms"] = String(ms) }
        }
        let statisticsMs = consumerConfig["statistics.interval.ms"].flatMap { Int64($0) } ?? 0
        // Warns when the group consumer stays out of a settled group (see docs/reliability.md).
        let groupWatch = GroupWatch(bound: .seconds(120), logger: logger)
        let subscribed = [topics.cartRequests, topics.orderRequests, topics.adminRequests, topics.deductionResults]
        let consumerConfiguration = consumerConfig
        let makeConsumer = { @Sendable () throws -> KafkaConsumer in
            try KafkaConsumer(
            configuration: consumerConfiguration,
            rebalance: KafkaConsumer.Rebalance(
                onAssigned: { dispatcher.partitionsAssigned($0) },
                onRevoking: { dispatcher.partitionsRevoking($0) }),
            options: KafkaConsumer.Options(onStatistics: { json in
                metrics.update(statistics: json)
                groupWatch.update(statistics: json)
            }),
            logger: logger)
        }
        let consumer = try makeConsumer()
        consumerRef.withLock { $0 = consumer }
        try consumer.subscribe(subscribed)
        logger.info("consuming", metadata: ["topics": "\(subscribed)"])

        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { try await relay.run() }
                group.addTask { [config] in
                    // Once at start; never fails the start (a broker may not answer DescribeConfigs).
                    await TopicManager(configuration: base, logger: logger)
                        .warnAboutRetention(topics, idempotencyRetentionHours: config.idempotencyRetentionHours)
                }
                group.addTask { await cancelWhenGracefulShutdown { await registry.run() } }
                if let path = config.healthFile {
                    // Statistics turned off (KAFKA_STATISTICS_INTERVAL_MS=0): readiness cannot see the group.
                    let liveness = Liveness(
                        progressBound: config.progressBound,
                        groupStatsMaxAge: statisticsMs > 0 ? max(.seconds(15), .milliseconds(statisticsMs * 3)) : nil)
                    group.addTask {
                        await Heartbeat(path: path, logger: logger).run(liveness: liveness) {
                            let latest = groupWatch.latest
                            return Liveness.Sample(
                                pollCount: consumerRef.withLock { $0?.pollCount } ?? 0, progress: await dispatcher.progress,
                                group: latest?.snapshot, groupSeenAt: latest?.at)
                        }
                    }
                }
                if config.createTopics {
                    let recovery = TopicRecovery(
                        topics: topics, manager: TopicManager(configuration: base, logger: logger),
                        consumer: { consumerRef.withLock { $0 } },
                        replace: { old in
                            let fresh = try makeConsumer()
                            // Installed first, so that the reading loop moves on to it when the old
                            // one's `records` end.
                            consumerRef.withLock { $0 = fresh }
                            // The old member leaves before the fresh one joins: a broker may hold a
                            // rebalance open for a member that leaves during it (Tansu: up to the
                            // rebalance timeout).
                            await old.close()
                            try fresh.subscribe(subscribed)
                        },
                        logger: logger)
                    group.addTask { try? await cancelWhenGracefulShutdown { try await recovery.run() } }
                }
                if let topic = topics.metricsTopic {
                    let reporter = MetricsReporter(
                        metrics: metrics, producer: producer, topic: topic, instance: config.instanceId,
                        interval: config.metricsInterval, inFlight: { await dispatcher.inFlightCount }, logger: logger)
                    group.addTask { try await reporter.run() }
                }
                group.addTask { [config] in
                    // Ends (by cancellation) when the graceful shutdown begins.
                    try? await cancelWhenGracefulShutdown {
                        while !Task.isCancelled {
                            if let n = try? await store.expireReplies(olderThanSeconds: config.idempotencyRetentionHours * 3600), n > 0 {
                                logger.info("expired \(n) idempotency entries")
                            }
                            try await Task.sleep(for: .seconds(600))
                        }
                    }
                }
                // Reads the group consumer's records; when it was replaced (see above), the
                // fresh one's.
                var reading = consumer
                while true {
                    for await record in reading.records { await dispatcher.offer(record) }
                    guard let next = consumerRef.withLock({ $0 }), next !== reading else { break }
                    reading = next
                }
            }
        } onGracefulShutdown: {
            logger.info("shutting down: draining in-flight records")
            Task {
                await dispatcher.drain()
                await consumerRef.withLock { $0 }?.close()  // commits stored offsets, leaves the group, ends `records`
            }
        }
        // The consumer is closed here (records ended); send what is left, then release everything.
        await dispatcher.drain()
        await consumerRef.withLock { $0 }?.close()
        await relay.relayAll()
        await upstream.close()
        await producer.close()
        await registry.deregister()
        await db.close()
        logger.info("stopped")
    }

    /// Retries start-up steps while the broker or database is not reachable yet.
    private func retrying(_ what: String, _ body: () async throws -> Void) async throws {
        var delay: Duration = .milliseconds(200)
        while true {
            do { return try await body() } catch {
                if Task.isCancelled { throw error }
                logger.warning("\(what) failed, retrying in \(delay): \(error)")
                try await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(5))
            }
        }
    }
}

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

    /// Retries while the cluster is unreachable; gives up after `timeout` (nil: never, as the
    /// service does at start-up; the `topics apply` command gives up so a broken Job fails).
    @discardableResult
    public func ensure(_ topics: Topics, timeout: Duration? = nil, warnMismatches: Bool = true) async throws -> Report {
        var delay: Duration = .milliseconds(200)
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
                if let deadline, ContinuousClock.now + delay > deadline { throw error }
                logger.warning("topic set-up failed, retrying in \(delay): \(error)")
                try await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(5))
            }
        }
    }
}

/// A lock-protected value that closures and tasks share by reference.
final class LockedBox<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func withLock<R: Sendable>(_ body: (inout Value) -> R) -> R { mutex.withLock { body(&$0) } }
}

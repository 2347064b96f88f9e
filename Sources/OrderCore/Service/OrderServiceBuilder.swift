import Foundation
import Kafka
import Logging
import Postgres

/// Makes everything the service runs, in start-up order, and starts nothing that reads requests:
/// checks the configuration (a dangerous reply-to allow-list refuses to start), creates missing
/// topics, opens the database and migrates it, registers this run for the crash-loop breaker
/// (before the group consumer subscribes: its first assignment must know whether the previous run
/// died), makes the producer, the upstream client (started: its reply consumer is assigned), the
/// pipeline, the dispatcher and the group consumer, and the services of `ServiceLineup`.
/// Start-up steps that need the broker or the database retry until they succeed.
struct OrderServiceBuilder {
    let config: ServiceConfiguration
    let logger: Logger

    func build() async throws -> OrderServiceComponents {
        let config = self.config
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

        let db = PostgresClient(configuration: config.postgres, logger: logger, onWait: { Instruments.databasePoolWait($0) })
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
        // A broker holds a whole batch to the topic's max.message.bytes: a batch of small replies
        // must not pass the size one record may have (librdkafka's default is 1,000,000).
        if config.kafka["batch.size"] == nil { producerConfig["batch.size"] = String(min(1_000_000, config.maxRecordBytes)) }
        let producer = try RenewingProducer(configuration: producerConfig, logger: logger, deliveryReportInterval: config.deliveryReportInterval)
        let upstream = try UpstreamClient(
            producer: producer, consumerConfiguration: base,
            replyTopics: [topics.productReplies, topics.inventoryCheckReplies],
            instanceId: config.instanceId, timeout: config.upstreamTimeout, logger: logger)
        try await retrying("upstream reply consumer") { try await upstream.start() }
        let metrics = ServiceMetrics()
        let catalog = CoalescingProductCatalog(
            upstream: KafkaProductCatalog(client: upstream, topics: topics), window: config.productCoalesceWindow,
            maxStaleness: config.productCacheStaleness)
        let routing = ReplyRouting(topics: topics, allowList: config.replyToAllowList, maxRecordBytes: config.maxRecordBytes, groupId: config.groupId)
        let relay = OutboxRelay(
            store: store, producer: producer,
            refusals: OutboxRelay.Refusals(
                // As for replies: a missing topic of our own is being (re-)created; any other is gone.
                isRetriable: { error, record in
                    error.isUnknownTopic ? topics.specs.contains { $0.name == record.topic } : error.isRetriable
                },
                deadLetter: { routing.deadLetter(unsendable: $0, error: $1) }),
            logger: logger)
        var cartBatching = CartBatcher.Configuration()
        cartBatching.window = config.cartBatchWindow
        let pipeline = RequestPipeline(
            topics: topics, routing: routing,
            catalog: catalog, addItemCatalog: RecentProductCatalog(catalog),
            inventory: KafkaInventoryChecker(client: upstream, topics: topics),
            store: store, carts: CartBatcher(store: store, configuration: cartBatching), outboxWritten: { relay.notify() }, metrics: metrics,
            replyTopics: ReplyTopicCheck { try await producer.topicPartitionCounts() }, eventSource: config.eventSource,
            logger: logger, crashOn: config.testCrashOn.map { Array($0.utf8) }, wedgeOn: config.testWedgeOn.map { Array($0.utf8) })

        let consumerRef = LockedBox<KafkaConsumer?>(nil)
        var dispatcherConfig = Dispatcher.Configuration()
        dispatcherConfig.maxInFlight = config.maxInFlight
        dispatcherConfig.maxInFlightBytes = config.maxInFlightBytes
        dispatcherConfig.probationRecords = config.probationRecords
        dispatcherConfig.probationDuration = config.probationWindow
        dispatcherConfig.poisonAfter = config.probationCrashes
        let logger = self.logger
        let dispatcher = Dispatcher(
            handler: pipeline,
            effects: Dispatcher.Effects(
                deliver: { record, done in
                    producer.send(record) { result in
                        switch result {
                        case .success: done(nil)
                        case .failure(let error): done(error)
                        }
                    }
                },
                storeOffset: { tp, next in
                    do { try consumerRef.withLock { $0 }?.store(tp, nextOffset: next) } catch {
                        logger.warning("offset store failed: \(error)")
                    }
                },
                setPaused: { tps, pause in
                    guard let c = consumerRef.withLock({ $0 }) else { return }
                    // Debug: under load this flips every in-flight cycle, on the producer's poll thread.
                    logger.debug(pause ? "in-flight limit reached: holding records back" : "in flight below the limit: handing records over again")
                    guard pause else {
                        try? c.resume(tps)
                        return
                    }
                    // Only partitions this consumer has: while it replaces another (topic recovery),
                    // the old one's are not its own yet, and a pause kept for them would hold their
                    // records back once assigned here (the dispatcher pauses again on assignment).
                    try? c.pauseAssigned(tps)
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
        // librdkafka's own range (0 to a day); the value reads as 32 bits there, so clamp ours too.
        let statisticsMs = min(max(consumerConfig["statistics.interval.ms"].flatMap { Int64($0) } ?? 0, 0), 86_400_000)
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
            // Push delivery: the poll thread offers each record to the dispatcher (no hop to a
            // reading task), and a revoke has one wait, the dispatcher's. The dispatcher's
            // in-flight pause holds records back in the consumer's buffers without stopping
            // librdkafka's fetching (see `KafkaConsumer.StateMachine.reconcile`).
            options: KafkaConsumer.Options(
                onStatistics: { json in
                    metrics.update(statistics: json)
                    groupWatch.update(statistics: json)
                },
                deliver: { dispatcher.offer($0) }),
            logger: logger)
        }
        let consumer = try makeConsumer()
        consumerRef.withLock { $0 = consumer }

        var heartbeat: HeartbeatService?
        if let path = config.healthFile {
            // Statistics turned off (KAFKA_STATISTICS_INTERVAL_MS=0): readiness cannot see the group.
            let liveness = Liveness(
                progressBound: config.progressBound,
                groupStatsMaxAge: statisticsMs > 0 ? max(.seconds(15), .milliseconds(statisticsMs * 3)) : nil)
            heartbeat = HeartbeatService(heartbeat: Heartbeat(path: path, logger: logger), liveness: liveness) {
                let latest = groupWatch.latest
                return Liveness.Sample(
                    pollCount: consumerRef.withLock { $0?.pollCount } ?? 0, progress: dispatcher.progress,
                    group: latest?.snapshot, groupSeenAt: latest?.at)
            }
        }
        var recovery: TopicRecovery?
        if config.createTopics {
            recovery = TopicRecovery(
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
        }
        let reporter = topics.metricsTopic.map { topic in
            MetricsReporter(
                metrics: metrics, producer: producer, topic: topic, instance: config.instanceId,
                interval: config.metricsInterval, inFlight: { dispatcher.inFlightCount }, logger: logger)
        }
        let services = ServiceLineup(
            expiry: IdempotencyExpiry(store: store, retentionHours: config.idempotencyRetentionHours, logger: logger),
            retentionWarning: RetentionWarning(
                manager: TopicManager(configuration: base, logger: logger), topics: topics,
                idempotencyRetentionHours: config.idempotencyRetentionHours, maxRecordBytes: config.maxRecordBytes, logger: logger),
            registry: registry, relay: relay, metrics: reporter,
            consumer: ConsumerLoop(consumerRef: consumerRef, dispatcher: dispatcher, subscribed: subscribed, logger: logger),
            recovery: recovery, heartbeat: heartbeat)
        return OrderServiceComponents(services: services, upstream: upstream, producer: producer, registry: registry, db: db)
    }

    /// Retries start-up steps while the broker or database is not reachable yet. A database
    /// error that no wait mends (`isLastingStartupError`) ends the start instead: the process
    /// exits with it rather than wait for ever without becoming ready.
    private func retrying(_ what: String, _ body: () async throws -> Void) async throws {
        var backoff = Backoff(initial: .milliseconds(200), maximum: .seconds(5))
        while true {
            do { return try await body() } catch {
                if Task.isCancelled { throw error }
                if let e = error as? PostgresError, e.isLastingStartupError {
                    logger.error("\(what) failed: \(error); not retrying")
                    throw error
                }
                logger.warning("\(what) failed, retrying in \(backoff.current): \(error)")
                // A cancelled sleep throws, which ends the retries.
                try await Task.sleep(for: backoff.next())
            }
        }
    }
}

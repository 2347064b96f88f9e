import ArgumentParser
import Foundation
import Kafka
import Logging
import OrderCore
import OrderTelemetry
import Postgres
import ServiceLifecycle

@main
struct OrderServiceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "order-service",
        abstract: "Kafka-native order service: carts and orders over Kafka request/reply, stored in PostgreSQL.",
        discussion: """
            With no subcommand it runs the service: creates missing topics from topics.yaml, migrates
            the database, joins the consumer group and answers requests until SIGTERM/SIGINT, which
            drains in-flight work, commits, leaves the group and exits.

            Environment variables (flags override them):
              KAFKA_BOOTSTRAP_SERVERS                   broker list (default localhost:9092)
              DATABASE_URL                              postgresql://user:pass@host:port/db?sslmode=…
                                                        (default postgresql://orders:orders@127.0.0.1:5432/orders)
              ORDER_SERVICE_TOPICS_FILE                 topics file (default ./topics.yaml)
              ORDER_SERVICE_GROUP_ID                    consumer group (default order-service)
              ORDER_SERVICE_INSTANCE_ID                 this instance's id (default random)
              ORDER_SERVICE_UPSTREAM_TIMEOUT_MS         Product/Inventory timeout (default 5000)
              ORDER_SERVICE_REPLY_TO_ALLOW              extra reply-to topics, comma separated, `prefix*` allowed
              ORDER_SERVICE_MAX_IN_FLIGHT               records in progress before fetching pauses (default 2000)
              ORDER_SERVICE_MAX_IN_FLIGHT_BYTES         their payload bytes before fetching pauses (default 64 MiB)
              ORDER_SERVICE_DB_POOL_SIZE                PostgreSQL connections (default 8)
              ORDER_SERVICE_IDEMPOTENCY_RETENTION_HOURS how long replies are kept for replays (default 168)
              ORDER_SERVICE_PRODUCT_CACHE_MS            how old product details add_item may use (default 0: always ask)
              ORDER_SERVICE_PRODUCT_COALESCE_MS         product look-ups this close together travel as one (default 1)
              ORDER_SERVICE_CART_BATCH_WINDOW_MS        a new batch of cart requests waits this long for more (default 3)
              ORDER_SERVICE_DELIVERY_REPORT_INTERVAL_MS delivery reports served this often while sends are out (default 5)
              ORDER_SERVICE_EXECUTOR_THREADS            threads of the service's own task executor (default 0: Dispatch's pool)
              ORDER_SERVICE_MAX_RECORD_BYTES            the largest record the service sends (default 1048576)
              ORDER_SERVICE_EVENT_SOURCE                CloudEvents source of notifications (default /order-service)
              ORDER_SERVICE_PROBATION_RECORDS           crash-loop breaker: records run one at a time after an
                                                        unclean exit (default 2000; 0: off)
              ORDER_SERVICE_PROBATION_WINDOW_S          how long after an unclean exit assignments go on probation (default 300)
              ORDER_SERVICE_PROBATION_CRASHES           unclean exits with a record in progress before it is
                                                        answered and dead-lettered instead (default 2)
              ORDER_SERVICE_CREATE_TOPICS               create missing topics at start (default true)
              ORDER_SERVICE_METRICS_INTERVAL_MS         metrics record interval (default 10000), if topics.yaml has a metrics topic
              ORDER_SERVICE_HEALTH_FILE                 heartbeat file for `health` (default /tmp/order-service.alive; empty: off)
              ORDER_SERVICE_PROGRESS_BOUND_S            a record running this long without finishing or retrying
                                                        stops the heartbeat (default 120)
              LOG_FORMAT                                json (default) or text
              LOG_LEVEL                                 trace|debug|info|notice|warning|error (default info)
              KAFKA_<PROPERTY>                          any librdkafka property, `_` → `.`, e.g.
                                                        KAFKA_SECURITY_PROTOCOL=SASL_SSL, KAFKA_SASL_MECHANISM=SCRAM-SHA-512
            """,
        subcommands: [Run.self, Migrate.self, TopicsCommand.self, Health.self, ReplayDLQ.self],
        defaultSubcommand: Run.self)

    /// Installs the configured global executor before anything else runs, then parses and runs.
    /// An invalid environment is reported by the command's own configuration step.
    static func main() async {
        let threads = (try? ServiceConfiguration.fromEnvironment())?.executorThreads ?? 0
        if threads > 0 { GlobalExecutor.installServiceExecutor(threads: threads) }
        await main(nil)
    }
}

struct CommonOptions: ParsableArguments {
    @Option(help: "Kafka bootstrap servers (env KAFKA_BOOTSTRAP_SERVERS).")
    var bootstrapServers: String?

    @Option(help: "PostgreSQL URL (env DATABASE_URL).")
    var databaseURL: String?

    @Option(help: "Path of topics.yaml (env ORDER_SERVICE_TOPICS_FILE).")
    var topicsFile: String?

    @Option(help: "Consumer group id (env ORDER_SERVICE_GROUP_ID).")
    var groupId: String?

    @Option(name: .customLong("kafka-property"), help: "A librdkafka property name=value; repeatable.")
    var kafkaProperties: [String] = []

    @Option(help: "Log level (env LOG_LEVEL).")
    var logLevel: String?

    func configuration() throws -> ServiceConfiguration {
        var c = try ServiceConfiguration.fromEnvironment()
        if let v = bootstrapServers { c.bootstrapServers = v }
        if let v = databaseURL { c.databaseURL = v }
        if let v = topicsFile { c.topicsFile = v }
        if let v = groupId { c.groupId = v }
        c.kafka = c.kafka.merging(try KafkaConfiguration.parsing(kafkaProperties))
        return c
    }

    /// What the Kafka operator commands (topics, replay-dlq) start from: a logger, the
    /// configuration, a supported librdkafka, and topics.yaml.
    func kafkaCommandSetup() throws -> (logger: Logger, config: ServiceConfiguration, topics: Topics) {
        let logger = makeLogger("order-service")
        let config = try configuration()
        try LibRdKafka.requireSupportedVersion()
        return (logger, config, try Topics.load(path: config.topicsFile))
    }

    func makeLogger(_ label: String) -> Logger {
        let level = Logger.Level(rawValue: (logLevel ?? ProcessInfo.processInfo.environment["LOG_LEVEL"] ?? "info").lowercased()) ?? .info
        JSONLogHandler.bootstrap()
        var logger = Logger(label: label)
        logger.logLevel = level
        return logger
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the service (the default).")
    @OptionGroup var options: CommonOptions

    func run() async throws {
        let logger = options.makeLogger("order-service")
        let config = try options.configuration()
        try LibRdKafka.requireSupportedVersion()
        let service = OrderService(configuration: config, logger: logger)
        Telemetry.consumerGroup = config.groupId
        // First, so that it stops last and exports the final spans.
        let telemetry = try OTelBootstrap.start(serviceName: "order-service", logger: logger).map { [ServiceGroupConfiguration.ServiceConfiguration(service: $0)] } ?? []
        let group = ServiceGroup(
            configuration: .init(services: telemetry + [.init(service: service)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply pending database migrations and exit.")
    @OptionGroup var options: CommonOptions

    func run() async throws {
        let logger = options.makeLogger("order-service")
        let config = try options.configuration()
        let db = PostgresClient(configuration: config.postgres, logger: logger)
        let applied = try await MigrationRunner(client: db, logger: logger, table: OrderSchema.migrationsTable).migrate(OrderSchema.migrations)
        await db.close()
        print(applied.isEmpty ? "database is up to date" : "applied migrations: \(applied.map(String.init).joined(separator: ", "))")
    }
}

struct TopicsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "topics", abstract: "Compare topics.yaml with the cluster (check) or create what is missing (apply).")
    @Argument(help: "check | apply") var mode: String
    @OptionGroup var options: CommonOptions

    func run() async throws {
        let (logger, config, topics) = try options.kafkaCommandSetup()
        let manager = TopicManager(configuration: config.kafkaBase, logger: logger)
        switch mode {
        case "check":
            let r = try await manager.check(topics)
            for t in r.missing { print("missing: \(t)") }
            for m in r.partitionMismatch { print("partitions differ: \(m.topic) declared \(m.declared), cluster has \(m.actual)") }
            if r.missing.isEmpty && r.partitionMismatch.isEmpty { print("all \(topics.specs.count) topics match") }
            // Replays after lost group offsets must find every record's reply (contract 9.1).
            let findings = await manager.retentionFindings(topics, idempotencyRetentionHours: config.idempotencyRetentionHours)
            for f in findings { print("\(f.isReplayRisk ? "retention too long" : "retention unknown"): \(f.message)") }
            if !findings.contains(where: \.isReplayRisk) { print("request topic retention within the idempotency retention (\(config.idempotencyRetentionHours) h)\(findings.isEmpty ? "" : " where known")") }
            if !r.missing.isEmpty || !r.partitionMismatch.isEmpty || findings.contains(where: \.isReplayRisk) { throw ExitCode(1) }
        case "apply":
            let r = try await manager.ensure(topics, timeout: .seconds(60))
            print(r.created.isEmpty ? "nothing to create" : "created: \(r.created.joined(separator: ", "))")
        default:
            throw ValidationError("mode must be check or apply")
        }
    }
}

struct Health: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Exit 0 when the running service's heartbeat file is fresh (for exec probes; no HTTP).",
        discussion: """
            The service touches the heartbeat file only while it makes progress (its poll loop runs and
            no record is stuck), and <file>.ready only while it is also in a settled consumer group.
            """)
    @Option(help: "Heartbeat file (env ORDER_SERVICE_HEALTH_FILE).") var file: String?
    @Option(help: "Maximum age in seconds.") var maxAge = 20
    @Flag(help: "Check readiness (<file>.ready: alive and in a settled consumer group) instead of liveness.") var ready = false

    func run() async throws {
        let base = file ?? ProcessInfo.processInfo.environment["ORDER_SERVICE_HEALTH_FILE"] ?? "/tmp/order-service.alive"
        let path = ready ? Heartbeat.readyPath(for: base) : base
        guard Heartbeat.isFresh(path: path, maxAge: .seconds(maxAge)) else {
            print("\(ready ? "not ready" : "unhealthy"): \(path) missing or older than \(maxAge) s")
            throw ExitCode(1)
        }
        print(ready ? "ready" : "healthy")
    }
}

struct ReplayDLQ: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay-dlq",
        abstract: "Re-submit dead letters to the topic they came from (after a fix); --dry-run lists them.")
    @Flag(help: "Only list what would be replayed.") var dryRun = false
    @Option(help: "At most this many records.") var limit = Int.max
    @Option(help: "Only dead letters from this source topic.") var sourceTopic: String?
    @OptionGroup var options: CommonOptions

    func run() async throws {
        let (logger, config, topics) = try options.kafkaCommandSetup()
        let entries = try await DeadLetterReplayer(configuration: config.kafkaBase, topics: topics, maxRecordBytes: config.maxRecordBytes, logger: logger)
            .run(dryRun: dryRun, limit: limit, only: sourceTopic)
        for e in entries {
            let what = e.skipped.map { "skipped (\($0))" } ?? (dryRun ? "would replay" : "replayed")
            print("\(what) \(topics.deadLetters)[\(e.partition)]@\(e.offset) → \(e.sourceTopic ?? "?"): \(e.error ?? "")")
        }
        let replayed = entries.filter { $0.skipped == nil }.count
        print("\(replayed) dead letter(s) \(dryRun ? "to replay" : "replayed")\(entries.count > replayed ? ", \(entries.count - replayed) skipped" : "")")
    }
}

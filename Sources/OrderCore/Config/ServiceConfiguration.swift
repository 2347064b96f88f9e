import Foundation
import Kafka
import Postgres

/// Everything the order service reads at start-up. Each field documents its default and the
/// environment variable that sets it; command-line flags override the environment.
public struct ServiceConfiguration: Sendable {
    /// KAFKA_BOOTSTRAP_SERVERS, default `localhost:9092`.
    public var bootstrapServers = "localhost:9092"
    /// DATABASE_URL, default `postgresql://orders:orders@127.0.0.1:5432/orders`.
    public var databaseURL = "postgresql://orders:orders@127.0.0.1:5432/orders"
    /// ORDER_SERVICE_TOPICS_FILE, default `./topics.yaml`.
    public var topicsFile = "topics.yaml"
    /// ORDER_SERVICE_GROUP_ID, default `order-service`: all instances with the same id share the work.
    public var groupId = "order-service"
    /// ORDER_SERVICE_INSTANCE_ID, default a random id: names this instance's upstream requests.
    public var instanceId = String(UUID().uuidString.prefix(8)).lowercased()
    /// ORDER_SERVICE_UPSTREAM_TIMEOUT_MS, default 5000: Product/Inventory reply timeout.
    public var upstreamTimeout: Duration = .seconds(5)
    /// ORDER_SERVICE_REPLY_TO_ALLOW, default empty: extra `reply-to` topics (comma separated,
    /// exact names or prefixes ending in `*`) besides the response topics of topics.yaml.
    public var replyToAllowList: [String] = []
    /// ORDER_SERVICE_MAX_IN_FLIGHT, default 2000: records in progress before fetching pauses.
    public var maxInFlight = 2_000
    /// ORDER_SERVICE_MAX_IN_FLIGHT_BYTES, default 67108864 (64 MiB): the same bound in payload bytes,
    /// whichever comes first (records near the broker's size limit).
    public var maxInFlightBytes = 64 << 20
    /// ORDER_SERVICE_DB_POOL_SIZE, default 8.
    public var databasePoolSize = 8
    /// ORDER_SERVICE_IDEMPOTENCY_RETENTION_HOURS, default 168 (7 days, the request topics' retention).
    public var idempotencyRetentionHours = 168
    /// ORDER_SERVICE_PRODUCT_CACHE_MS, default 0 (off): how old product details add_item may use.
    /// create_order always asks the Product Service.
    public var productCacheStaleness: Duration = .zero
    /// ORDER_SERVICE_PRODUCT_COALESCE_MS, default 1: product look-ups that start within this long
    /// of each other travel to the Product Service as one request. 0: no wait — a look-up leaves at
    /// once unless 8 are on their way, and then rides with the next (batches grow with the load).
    public var productCoalesceWindow: Duration = .milliseconds(1)
    /// ORDER_SERVICE_CART_BATCH_WINDOW_MS, default 3: a new batch of cart requests waits this long
    /// for more before it starts (`CartBatcher.Configuration.window`); 0: a lone request goes at once.
    public var cartBatchWindow: Duration = .milliseconds(3)
    /// ORDER_SERVICE_DELIVERY_REPORT_INTERVAL_MS, default 5: while sends are outstanding, the
    /// producer serves delivery reports every this long instead of waking for each one (see
    /// `KafkaProducer.init`); each report comes up to this much later, so a record whose outputs go
    /// one after another (each after the previous one's report) completes up to that much later
    /// per output. 0: as they arrive.
    public var deliveryReportInterval: Duration = .milliseconds(5)
    /// ORDER_SERVICE_EXECUTOR_THREADS, default 0: the threads of the executor that runs tasks
    /// without an actor. 0: Dispatch's cooperative pool (Swift's default); N (1…64): a
    /// `ServiceExecutor` of N threads (`GlobalExecutor`, docs/architecture.md "Threads and executors").
    public var executorThreads = 0
    /// ORDER_SERVICE_HEALTH_FILE, default `/tmp/order-service.alive`: touched every 5 s while the
    /// service makes progress, and `<file>.ready` while it is also in a settled consumer group;
    /// `order-service health [--ready]` checks them (exec probes need no HTTP). Empty: off.
    public var healthFile: String? = "/tmp/order-service.alive"
    /// ORDER_SERVICE_PROGRESS_BOUND_S, default 120: a running record that neither finishes nor
    /// begins a retry for this long stops the heartbeat (`Liveness`). Keep it well above the
    /// longest normal record (upstream timeouts, a 30-s delivery timeout).
    public var progressBound: Duration = .seconds(120)
    /// ORDER_SERVICE_METRICS_INTERVAL_MS, default 10000: how often a metrics record goes to the
    /// metrics topic (when topics.yaml declares one).
    public var metricsInterval: Duration = .seconds(10)
    /// ORDER_SERVICE_MAX_RECORD_BYTES, default 1048576 (Apache Kafka's default `max.message.bytes`):
    /// the largest record the service sends. Paged replies end early to fit it; the producer's
    /// `message.max.bytes` is set to it unless KAFKA_MESSAGE_MAX_BYTES says otherwise.
    public var maxRecordBytes = Limits.defaultMaxRecordBytes
    /// ORDER_SERVICE_EVENT_SOURCE, default `/order-service`: the CloudEvents `source` of notifications.
    public var eventSource = OutgoingMessages.defaultEventSource
    /// ORDER_SERVICE_CREATE_TOPICS, default true (on/true/yes/1; off/false/no/0): create missing
    /// topics of topics.yaml at start.
    public var createTopics = true
    /// ORDER_SERVICE_PROBATION_RECORDS, default 2000 (0: no crash-loop breaker): after an unclean
    /// exit in the group, how many records of the newly assigned partitions (one budget for all of
    /// them) run one at a time behind a durable in-progress marker (docs/reliability.md, "Crash-loop breaker").
    public var probationRecords = 2_000
    /// ORDER_SERVICE_PROBATION_WINDOW_S, default 300: partitions assigned this long after an
    /// unclean exit was seen start on probation; a partition's probation also ends after this long.
    public var probationWindow: Duration = .seconds(300)
    /// ORDER_SERVICE_PROBATION_CRASHES, default 2: a record found in progress at this many unclean
    /// exits (while on probation) is answered internal_error and dead-lettered instead of handled
    /// again. 1 gives up a record at the first crash it is seen in; one kill by an operator then suffices.
    public var probationCrashes = 2
    /// ORDER_SERVICE_TEST_CRASH_ON, unset by default and in production: TEST ONLY. A request whose
    /// value contains this text makes the process abort, to test the crash-loop breaker.
    public var testCrashOn: String?
    /// ORDER_SERVICE_TEST_WEDGE_ON, unset by default and in production: TEST ONLY. A request whose
    /// value contains this text never finishes (its handler waits for ever), to test the probes.
    public var testWedgeOn: String?
    /// This process's id (random, not configurable): names its run in `order_service_runs` and
    /// its PostgreSQL sessions, so a restart with the same instance id is still a new run.
    public let runId = String(format: "%08x", UInt32.random(in: 0...UInt32.max))
    /// Any `KAFKA_*` variable (e.g. KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM,
    /// KAFKA_SASL_USERNAME) is passed to librdkafka as the property with `_` → `.`, lower case.
    public var kafka = KafkaConfiguration()

    public init() {}

    /// KAFKA_* variables that are not librdkafka properties: ours (the bootstrap list is read
    /// explicitly so that the flag can override it) and common ones of other Kafka tools.
    static let ownKafkaVariables: Set<String> = [
        "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_PORT", "KAFKA_HOME", "KAFKA_OPTS", "KAFKA_HEAP_OPTS", "KAFKA_JMX_OPTS",
        "KAFKA_LOG4J_OPTS",
    ]

    /// librdkafka properties from KAFKA_* variables (the bootstrap list and other tools' variables excluded).
    public static func kafkaEnvironment(_ env: [String: String]) -> KafkaConfiguration {
        KafkaConfiguration.fromEnvironment(env, excluding: ownKafkaVariables)
    }

    public static func fromEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment) throws -> ServiceConfiguration {
        var c = ServiceConfiguration()
        c.kafka = kafkaEnvironment(env)
        if let v = env["KAFKA_BOOTSTRAP_SERVERS"], !v.isEmpty { c.bootstrapServers = v }
        if let v = env["DATABASE_URL"], !v.isEmpty { c.databaseURL = v }
        if let v = env["ORDER_SERVICE_TOPICS_FILE"], !v.isEmpty { c.topicsFile = v }
        if let v = env["ORDER_SERVICE_GROUP_ID"], !v.isEmpty { c.groupId = v }
        if let v = env["ORDER_SERVICE_INSTANCE_ID"], !v.isEmpty { c.instanceId = v }
        if let v = env["ORDER_SERVICE_UPSTREAM_TIMEOUT_MS"] { c.upstreamTimeout = .milliseconds(try int(v, "ORDER_SERVICE_UPSTREAM_TIMEOUT_MS", min: 1)) }
        if let v = env["ORDER_SERVICE_REPLY_TO_ALLOW"] { c.replyToAllowList = list(v) }
        if let v = env["ORDER_SERVICE_MAX_IN_FLIGHT"] { c.maxInFlight = try int(v, "ORDER_SERVICE_MAX_IN_FLIGHT", min: 1) }
        if let v = env["ORDER_SERVICE_MAX_IN_FLIGHT_BYTES"] { c.maxInFlightBytes = try int(v, "ORDER_SERVICE_MAX_IN_FLIGHT_BYTES", min: 1) }
        if let v = env["ORDER_SERVICE_DB_POOL_SIZE"] { c.databasePoolSize = try int(v, "ORDER_SERVICE_DB_POOL_SIZE", min: 1) }
        if let v = env["ORDER_SERVICE_IDEMPOTENCY_RETENTION_HOURS"] {
            c.idempotencyRetentionHours = try int(v, "ORDER_SERVICE_IDEMPOTENCY_RETENTION_HOURS", min: 1)
        }
        if let v = env["ORDER_SERVICE_PRODUCT_CACHE_MS"] {
            c.productCacheStaleness = .milliseconds(try int(v, "ORDER_SERVICE_PRODUCT_CACHE_MS", min: 0))
        }
        if let v = env["ORDER_SERVICE_PRODUCT_COALESCE_MS"] {
            c.productCoalesceWindow = .milliseconds(try int(v, "ORDER_SERVICE_PRODUCT_COALESCE_MS", min: 0))
        }
        if let v = env["ORDER_SERVICE_CART_BATCH_WINDOW_MS"] {
            let ms = try int(v, "ORDER_SERVICE_CART_BATCH_WINDOW_MS", min: 0)
            // Every cart request of an idle service waits the window: keep it a small delay.
            guard ms <= 100 else { throw ConfigurationError("ORDER_SERVICE_CART_BATCH_WINDOW_MS must be at most 100, got '\(v)'") }
            c.cartBatchWindow = .milliseconds(ms)
        }
        if let v = env["ORDER_SERVICE_DELIVERY_REPORT_INTERVAL_MS"] {
            let ms = try int(v, "ORDER_SERVICE_DELIVERY_REPORT_INTERVAL_MS", min: 0)
            // Longer would hold every record's completion (and its key's next record) for it.
            guard ms <= 100 else { throw ConfigurationError("ORDER_SERVICE_DELIVERY_REPORT_INTERVAL_MS must be at most 100, got '\(v)'") }
            c.deliveryReportInterval = .milliseconds(ms)
        }
        if let v = env["ORDER_SERVICE_EXECUTOR_THREADS"] {
            let n = try int(v, "ORDER_SERVICE_EXECUTOR_THREADS", min: 0)
            guard n <= 64 else { throw ConfigurationError("ORDER_SERVICE_EXECUTOR_THREADS must be at most 64, got '\(v)'") }
            c.executorThreads = n
        }
        if let v = env["ORDER_SERVICE_HEALTH_FILE"] { c.healthFile = v.isEmpty ? nil : v }
        if let v = env["ORDER_SERVICE_METRICS_INTERVAL_MS"] {
            c.metricsInterval = .milliseconds(try int(v, "ORDER_SERVICE_METRICS_INTERVAL_MS", min: 100))
        }
        if let v = env["ORDER_SERVICE_MAX_RECORD_BYTES"] {
            c.maxRecordBytes = try int(v, "ORDER_SERVICE_MAX_RECORD_BYTES", min: ReplyRouting.minimumMaxRecordBytes)
        }
        if let v = env["ORDER_SERVICE_EVENT_SOURCE"], !v.isEmpty { c.eventSource = v }
        if let v = env["ORDER_SERVICE_CREATE_TOPICS"] { c.createTopics = try bool(v, "ORDER_SERVICE_CREATE_TOPICS") }
        if let v = env["ORDER_SERVICE_PROBATION_RECORDS"] { c.probationRecords = try int(v, "ORDER_SERVICE_PROBATION_RECORDS", min: 0) }
        if let v = env["ORDER_SERVICE_PROBATION_WINDOW_S"] {
            c.probationWindow = .seconds(try int(v, "ORDER_SERVICE_PROBATION_WINDOW_S", min: 1))
        }
        if let v = env["ORDER_SERVICE_PROBATION_CRASHES"] { c.probationCrashes = try int(v, "ORDER_SERVICE_PROBATION_CRASHES", min: 1) }
        if let v = env["ORDER_SERVICE_TEST_CRASH_ON"], !v.isEmpty { c.testCrashOn = v }
        if let v = env["ORDER_SERVICE_TEST_WEDGE_ON"], !v.isEmpty { c.testWedgeOn = v }
        if let v = env["ORDER_SERVICE_PROGRESS_BOUND_S"] {
            c.progressBound = .seconds(try int(v, "ORDER_SERVICE_PROGRESS_BOUND_S", min: 1))
        }
        return c
    }

    static func int(_ text: String, _ name: String, min: Int) throws -> Int {
        guard let v = Int(text.trimmingCharacters(in: .whitespaces)), v >= min else {
            throw ConfigurationError("\(name) must be an integer ≥ \(min), got '\(text)'")
        }
        return v
    }

    /// on/true/yes/1 or off/false/no/0, case-insensitive, surrounding white space ignored.
    static func bool(_ text: String, _ name: String) throws -> Bool {
        switch text.trimmingCharacters(in: .whitespacesAndNewlines).lowercased() {
        case "on", "true", "yes", "1": return true
        case "off", "false", "no", "0": return false
        default: throw ConfigurationError("\(name) must be on/off, true/false, yes/no or 1/0, got '\(text)'")
        }
    }

    static func list(_ text: String) -> [String] {
        text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    /// librdkafka properties for all clients: ours, then the KAFKA_* environment on top.
    public var kafkaBase: KafkaConfiguration {
        KafkaConfiguration(["bootstrap.servers": bootstrapServers, "client.id": "order-service-\(instanceId)"]).merging(kafka)
    }

    public var postgres: PostgresConfiguration {
        PostgresConfiguration(url: databaseURL, poolSize: databasePoolSize, applicationName: applicationName)
    }

    /// `order-service/<instance id>/<run id>` on every PostgreSQL session of this process: how
    /// other instances tell that it still runs (`RunRegistry`). At most 63 bytes (PostgreSQL
    /// truncates longer names) of printable ASCII (it replaces the rest): the instance id is
    /// shortened and cleaned, the run id kept whole.
    public var applicationName: String {
        let room = 63 - "order-service//".utf8.count - runId.utf8.count
        let instance = String(decoding: instanceId.utf8.prefix(room).map { $0 >= 0x20 && $0 < 0x7F ? $0 : UInt8(ascii: "_") }, as: UTF8.self)
        return "order-service/\(instance)/\(runId)"
    }
}


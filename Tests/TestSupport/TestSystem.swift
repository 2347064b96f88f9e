import Foundation
import Kafka
import Logging
import OrderCore
import Postgres
import ReferenceServices
import Synchronization

/// One of the project's executables, started as a child process with its output in a log file.
public final class ChildProcess: Sendable {
    public let name: String
    public let logPath: String
    private let process: Process

    public init(name: String, executable: String, arguments: [String] = [], environment: [String: String]) throws {
        self.name = name
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("order-service-tests", isDirectory: true)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        logPath = dir.appendingPathComponent("\(name)-\(UUID().uuidString.prefix(8)).log").path
        FileManager.default.createFile(atPath: logPath, contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        p.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        let log = FileHandle(forWritingAtPath: logPath)
        p.standardOutput = log
        p.standardError = log
        try p.run()
        process = p
    }

    public var isRunning: Bool { process.isRunning }
    public var pid: Int32 { process.processIdentifier }

    public func signal(_ sig: Int32) { if process.isRunning { kill(process.processIdentifier, sig) } }

    /// Waits for the process to exit; returns its status, or nil if it is still running at the
    /// deadline (or when the calling task is cancelled).
    public func waitForExit(timeout: Duration) async -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now > deadline || Task.isCancelled { return nil }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return process.terminationStatus
    }

    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// SIGTERM, then SIGKILL after 15 s. Runs to the end also in a cancelled task (a test that hit
    /// its time limit still stops its processes): the waiting happens in a task of its own.
    public func stop() async {
        guard isRunning else { return }
        await Task.detached { [self] in
            signal(SIGTERM)
            if await waitForExit(timeout: .seconds(15)) == nil { signal(SIGKILL); _ = await waitForExit(timeout: .seconds(5)) }
        }.value
    }
}

public struct TestSystemError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The whole system for end-to-end tests: the real `order-service`, `product-service` and
/// `inventory-service` executables on topics and a consumer group of their own (a topics.yaml
/// with prefixed names), against the local broker and database. Tests talk to it only over Kafka.
public final class TestSystem: Sendable {
    public let prefix: String
    public let topics: Topics
    public let topicsFile: String
    public let groupId: String
    /// The broker this system talks to (the shared one unless a test runs its own).
    public let bootstrapServers: String
    private let producerBox: Mutex<KafkaProducer>
    public var producer: KafkaProducer { producerBox.withLock { $0 } }
    private let listener = Mutex<KafkaConsumer?>(nil)
    private let seen = SeenRecords()
    private let processes = Mutex<[String: ChildProcess]>([:])
    private let started = Mutex<[ChildProcess]>([])
    private let extraEnvironment: [String: String]
    private let orderServiceEnvironment: [String: String]
    public let logger: Logger

    /// Directory of the built executables: ORDER_SERVICE_BIN_DIR, else .build/debug.
    public static var binDir: String {
        if let d = ProcessInfo.processInfo.environment["ORDER_SERVICE_BIN_DIR"], !d.isEmpty { return d }
        return repoRoot + "/.build/debug"
    }

    public static var repoRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    /// Starts a system. `product`/`inventory` false leaves that upstream silent.
    /// `environment` goes to every executable, `serviceEnvironment` to the order service only.
    /// `bootstrapServers` replaces the local broker (e.g. a `KafkaMockCluster` or a test's own
    /// Tansu); `createTopics` then replaces the CreateTopics requests (for clusters without that API).
    public static func start(
        _ name: String, product: Bool = true, inventory: Bool = true, environment: [String: String] = [:],
        serviceEnvironment: [String: String] = [:], bootstrapServers: String = TestKafka.bootstrapServers,
        createTopics: (@Sendable (Topics) async throws -> Void)? = nil
    ) async throws -> TestSystem {
        let system = try await TestSystem(
            name: name, environment: environment, serviceEnvironment: serviceEnvironment, bootstrapServers: bootstrapServers,
            createTopics: createTopics)
        // Whatever fails from here on (an executable that does not start, a service that never
        // answers) stops what was started, so no child outlives the failed start.
        do {
            if product { try system.startProcess("product-service") }
            if inventory { try system.startProcess("inventory-service") }
            try system.startProcess("order-service")
            try await system.waitUntilServing()
        } catch {
            await system.stop()
            throw error
        }
        return system
    }

    private init(
        name: String, environment: [String: String], serviceEnvironment: [String: String], bootstrapServers: String,
        createTopics: (@Sendable (Topics) async throws -> Void)?
    ) async throws {
        self.bootstrapServers = bootstrapServers
        prefix = "e2e_\(name)_\(UUID().uuidString.prefix(8).lowercased())"
        var yaml = try String(contentsOfFile: Self.repoRoot + "/topics.yaml", encoding: .utf8)
        for logical in Topics.requiredLogicalNames.keys + ["order_service_metrics"] {
            yaml = yaml.replacingOccurrences(of: "    name: \(logical)\n", with: "    name: \(prefix)_\(logical)\n")
        }
        topics = try Topics.parse(yaml: yaml)
        topicsFile = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-topics.yaml").path
        try yaml.write(toFile: topicsFile, atomically: true, encoding: .utf8)
        groupId = "\(prefix)_group"
        extraEnvironment = environment
        orderServiceEnvironment = serviceEnvironment
        var logger = Logger(label: "e2e")
        logger.logLevel = .warning
        self.logger = logger
        if bootstrapServers == TestKafka.bootstrapServers { try await TestKafka.requireBroker() }
        let kafka = KafkaConfiguration(["bootstrap.servers": bootstrapServers])
        if let createTopics {
            try await createTopics(topics)
        } else {
            try await TopicManager(configuration: kafka, logger: logger).ensure(topics)
        }
        try await TestDatabase.withClient(poolSize: 1) { db in
            try await ReferenceSchema.migrate(db, logger: logger)
            _ = try await MigrationRunner(client: db, logger: logger, table: OrderSchema.migrationsTable).migrate(OrderSchema.migrations)
        }
        let producer = try KafkaProducer(configuration: kafka, logger: logger)
        producerBox = Mutex(producer)
        do {
            try startListening()
        } catch {
            await producer.close()
            throw error
        }
    }

    public func environment(for executable: String) -> [String: String] {
        [
            "KAFKA_BOOTSTRAP_SERVERS": bootstrapServers, "DATABASE_URL": TestDatabase.url,
            "ORDER_SERVICE_TOPICS_FILE": topicsFile, "ORDER_SERVICE_GROUP_ID": groupId, "LOG_LEVEL": "info",
            "ORDER_SERVICE_HEALTH_FILE": healthFile,
        ].merging(extraEnvironment) { _, new in new }
            .merging(executable == "order-service" ? orderServiceEnvironment : [:]) { _, new in new }
    }

    /// Starts (or restarts) one of the executables; `environment` adds to (and overrides) the
    /// system's environment for this process only.
    @discardableResult
    public func startProcess(_ executable: String, as name: String? = nil, environment extra: [String: String] = [:]) throws
        -> ChildProcess
    {
        let path = Self.binDir + "/" + executable
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw TestSystemError("\(path) is missing: run `swift build` first (deploy/local/test.sh does)")
        }
        let args = executable == "order-service" ? [] : ["--group-id", "\(prefix)_\(executable)"]
        let p = try ChildProcess(name: name ?? executable, executable: path, arguments: args, environment: environment(for: executable).merging(extra) { _, new in new })
        processes.withLock { $0[name ?? executable] = p }
        started.withLock { $0.append(p) }
        return p
    }

    /// The latest process started under `name`.
    public func process(_ name: String) -> ChildProcess? { processes.withLock { $0[name] } }

    /// Every process this system started, restarted ones and `runCommand`s included, in order.
    public var allProcesses: [ChildProcess] { started.withLock { $0 } }

    /// This system's heartbeat file (each system has its own).
    public var healthFile: String { FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix).alive").path }

    /// Runs `order-service <arguments>` with this system's environment (plus `extra`); returns
    /// exit status and output.
    public func runCommand(
        _ arguments: [String], environment extra: [String: String] = [:], timeout: Duration = .seconds(60)
    ) async throws -> (status: Int32, output: String) {
        let p = try ChildProcess(
            name: "order-service-\(arguments.first ?? "cmd")", executable: Self.binDir + "/order-service", arguments: arguments,
            environment: environment(for: "order-service").merging(extra) { _, new in new })
        started.withLock { $0.append(p) }
        guard let status = await p.waitForExit(timeout: timeout) else {
            p.signal(SIGKILL)
            throw TestSystemError("order-service \(arguments) did not finish within \(timeout)")
        }
        return (status, p.log)
    }

    /// Waits until the order service answers a get_cart.
    public func waitUntilServing(timeout: Duration = .seconds(60)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            try Task.checkCancellation()
            if let p = process("order-service"), !p.isRunning {
                throw TestSystemError("order-service exited:\n\(p.log.suffix(3000))")
            }
            if (try? await request("cart_requests", ["action": "get_cart", "user_id": 1], timeout: .seconds(3))) != nil { return }
        }
        throw TestSystemError("order-service did not answer within \(timeout):\n\(process("order-service")?.log.suffix(3000) ?? "")")
    }

    // MARK: Talking to it

    /// Produces a raw record to a topic given by logical name (to `partition`, else by key).
    @discardableResult
    public func send(
        _ logical: String, value: [UInt8]?, key: String? = nil, headers: [KafkaHeader] = [], partition: Int32? = nil
    ) async throws -> DeliveryReport {
        try await producer.send(
            KafkaOutgoingRecord(
                topic: topics.name(logical), partition: partition, key: key.map { Array($0.utf8) }, value: value, headers: headers))
    }

    /// Sends a request with a fresh correlation-id and returns the reply record.
    public func requestRecord(
        _ logical: String, value: [UInt8]?, key: String? = nil, headers: [KafkaHeader] = [], partition: Int32? = nil,
        timeout: Duration = .seconds(20)
    ) async throws -> KafkaRecord {
        let correlation = UUID().uuidString
        let all = headers.contains { $0.key == "correlation-id" } ? headers : headers + [KafkaHeader("correlation-id", correlation)]
        let wanted = all.first { $0.key == "correlation-id" }!.value
        try await send(logical, value: value, key: key, headers: all, partition: partition)
        return try await waitFor(timeout: timeout) { r in
            r.header("correlation-id")?.value == wanted && self.topics.entries.values.contains { $0.name == r.topic && $0.role == .response }
        }
    }

    /// Sends a JSON request keyed by its user_id and returns the parsed reply.
    public func request(_ logical: String, _ body: JSON, headers: [KafkaHeader] = [], timeout: Duration = .seconds(20)) async throws -> JSON {
        var key: String?
        if case .int(let u)? = body["user_id"] { key = String(u) }
        let r = try await requestRecord(logical, value: body.bytes, key: key, headers: headers, timeout: timeout)
        return try JSON.parse(r.value ?? [])
    }

    /// Waits for the first record seen (on response, event, dead-letter and upstream topics) that matches.
    public func waitFor(timeout: Duration = .seconds(20), _ match: @escaping @Sendable (KafkaRecord) -> Bool) async throws -> KafkaRecord {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let r = seen.records.withLock({ $0.first(where: match) }) { return r }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw TestSystemError("no matching record within \(timeout)")
    }

    /// Every record seen so far on a topic (logical name).
    public func records(on logical: String) -> [KafkaRecord] {
        let name = topics.name(logical)
        return seen.records.withLock { $0.filter { $0.topic == name } }
    }

    /// Reads the response, event, dead-letter, upstream and metrics topics from their beginning
    /// into `records(on:)` (what was seen before is kept).
    public func startListening() throws {
        var listen = KafkaConfiguration(["bootstrap.servers": bootstrapServers])
        listen["group.id"] = "\(prefix)_listener"
        listen["enable.auto.commit"] = "false"
        let consumer = try KafkaConsumer(configuration: listen, logger: logger)
        var start: [TopicPartition: Int64] = [:]
        for e in topics.entries.values where [.response, .event, .deadLetter, .upstreamRequest, .metrics].contains(e.role) {
            for p in 0..<e.spec.partitions { start[TopicPartition(e.name, p)] = -2 }  // -2: beginning
        }
        try consumer.assign(start)
        let seen = self.seen
        Task { for await r in consumer.records { seen.records.withLock { $0.append(r) } } }
        listener.withLock { $0 = consumer }
    }

    /// Stops reading (see `startListening`).
    public func stopListening() async {
        let consumer = listener.withLock { l in
            defer { l = nil }
            return l
        }
        await consumer?.close()
    }

    /// Replaces the test's producer with a fresh one (after a broker lost its state, an
    /// idempotent producer's id is unknown to it) and closes the old one.
    public func renewProducer() async throws {
        let fresh = try KafkaProducer(configuration: KafkaConfiguration(["bootstrap.servers": bootstrapServers]), logger: logger)
        let old = producerBox.withLock { p in
            defer { p = fresh }
            return p
        }
        await old.close()
    }

    public func stop() async {
        // Every process ever started, not only the latest per name: a test may reuse a name while
        // the earlier process still runs.
        for p in allProcesses { await p.stop() }
        await stopListening()
        await producer.close()
        try? FileManager.default.removeItem(atPath: topicsFile)
    }
}

/// Products in the reference services' tables, with ids no other test uses.
public enum TestCatalog {
    public static func uniqueProductId() -> Int64 { Int64.random(in: 1_000_000_000...9_000_000_000_000) }
    public static func uniqueUserId() -> Int64 { Int64.random(in: 1_000_000_000...9_000_000_000_000) }

    public static func add(_ id: Int64, name: String = "Test product", price: String = "19.99", stock: Int = 1_000) async throws {
        try await TestDatabase.withClient { db in
            try await ReferenceSchema.migrate(db, logger: TestDatabase.logger)
            _ = try await db.query(
                "INSERT INTO ref_products (product_id, name, price) VALUES ($1, $2, $3::numeric) ON CONFLICT (product_id) DO UPDATE SET name = EXCLUDED.name, price = EXCLUDED.price",
                [id, name, price])
            _ = try await db.query(
                "INSERT INTO ref_stock (product_id, available) VALUES ($1, $2) ON CONFLICT (product_id) DO UPDATE SET available = EXCLUDED.available",
                [id, stock])
        }
    }

    public static func stock(_ id: Int64) async throws -> Int {
        try await TestDatabase.withClient { db in
            try await db.query("SELECT available FROM ref_stock WHERE product_id = $1", [id]).rows[0].decode(0)
        }
    }
}

final class SeenRecords: Sendable {
    let records = Mutex<[KafkaRecord]>([])
}

/// Runs `body` against a fresh system and always stops it (and its processes) afterwards.
public func withSystem(
    _ name: String, product: Bool = true, inventory: Bool = true, environment: [String: String] = [:],
    _ body: (TestSystem) async throws -> Void
) async throws {
    let system = try await TestSystem.start(name, product: product, inventory: inventory, environment: environment)
    do {
        try await body(system)
    } catch {
        await system.stop()
        throw error
    }
    await system.stop()
}

extension JSON {
    public var string: String? { if case .string(let s) = self { s } else { nil } }
    public var int: Int64? { if case .int(let v) = self { v } else { nil } }
    public var array: [JSON]? { if case .array(let a) = self { a } else { nil } }
    public var isNull: Bool { self == .null }
}

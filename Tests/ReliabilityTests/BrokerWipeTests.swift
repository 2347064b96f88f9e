import Foundation
import Kafka
import OrderCore
import Testing
import TestSupport

/// A Tansu broker of the test's own (in-memory storage, a free port), so that a test can wipe it
/// by restarting it without disturbing the shared broker other tests use. The binary is
/// `TANSU_BIN`, else `.local/bin/tansu` of this checkout (deploy/local/setup.sh installs it),
/// else `tansu` on PATH.
final class PrivateBroker: Sendable {
    let port: Int
    private let process = ProcessBox()
    let logPath: String

    init() throws {
        var port = Int.random(in: 41_000...49_000)
        while Self.isOpen(port) { port = Int.random(in: 41_000...49_000) }
        self.port = port
        logPath = FileManager.default.temporaryDirectory.appendingPathComponent("tansu-\(port).log").path
    }

    var bootstrapServers: String { "127.0.0.1:\(port)" }

    static var binary: String {
        if let b = ProcessInfo.processInfo.environment["TANSU_BIN"], !b.isEmpty { return b }
        let local = TestSystem.repoRoot + "/.local/bin/tansu"
        return FileManager.default.isExecutableFile(atPath: local) ? local : "tansu"
    }

    /// Starts an empty broker and waits until it accepts connections.
    func start() async throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [
            Self.binary, "broker", "--listener-url", "tcp://127.0.0.1:\(port)", "--advertised-listener-url",
            "tcp://127.0.0.1:\(port)", "--storage-engine", "memory://tansu/",
        ]
        if !FileManager.default.fileExists(atPath: logPath) { FileManager.default.createFile(atPath: logPath, contents: nil) }
        let log = FileHandle(forWritingAtPath: logPath)
        log?.seekToEndOfFile()
        p.standardOutput = log
        p.standardError = log
        try p.run()
        process.set(p)
        let deadline = ContinuousClock.now + .seconds(15)
        while !Self.isOpen(port) {
            if !p.isRunning || ContinuousClock.now > deadline {
                throw TestSystemError("Tansu (\(Self.binary)) did not start on port \(port); see \(logPath)")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Kills the broker: everything it held (topics, records, groups, producer ids) is gone.
    func stop() {
        guard let p = process.take() else { return }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
    }

    /// The in-memory broker loses all its state, as `deploy/local/broker.sh restart` does.
    func wipe() async throws {
        stop()
        try await start()
    }

    static func isOpen(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}

extension ReliabilityTests {
    /// The in-memory broker loses everything (topics, records, groups, producer ids) under a
    /// running system. librdkafka (2.8.0 to at least 2.12.1) may crash with SIGSEGV right after
    /// such a wipe: a Fetch error response from Tansu carries a leader-change tag for a topic
    /// with a zero topic id, and librdkafka's leader-discovery update then looks the topic up by
    /// its (NULL) name (docs/reliability.md). So the test's own reader is stopped across the
    /// wipe, and any executable that crashed (order, product or inventory service) is started
    /// again, as its supervisor (Kubernetes, Compose `restart: unless-stopped`) would; an instance
    /// that stays up must serve again. The requests after the wipe need no upstream (the reference
    /// Product and Inventory services have no topic recovery of their own, and are not under test). What must be served is new: requests with ids made after
    /// the wipe, for users and a product that did not exist before it (`freshReplies`).
    @Test(
        "broker wipe: after the in-memory broker lost all state under a running service, requests are answered again",
        .timeLimit(.minutes(6)))
    func brokerWipe() async throws {
        let broker = try PrivateBroker()
        defer { broker.stop() }
        try await broker.start()
        let system = try await TestSystem.start("wipe", bootstrapServers: broker.bootstrapServers)
        do {
            let users = (0..<16).map { _ in TestCatalog.uniqueUserId() }
            _ = try await slowestReply(system, users: users)

            await system.stopListening()
            try await broker.wipe()
            let wiped = ContinuousClock.now
            try await system.renewProducer()
            // State created after the wipe: a product and users nobody used before, and request ids
            // made now. A reply stored or sent before the wipe cannot show these users' carts with
            // this product; an offset-keyed reply from before (offsets restart at 0) cannot either.
            let run = String(UUID().uuidString.prefix(8).lowercased())
            let product = TestCatalog.uniqueProductId()
            let fresh = (0..<16).map { _ in TestCatalog.uniqueUserId() }
            // Carts written after the wipe straight into the database (no upstream involved).
            try await TestDatabase.withClient { db in
                for u in fresh {
                    let cart: Int64 = try await db.query("INSERT INTO carts (user_id) VALUES ($1) RETURNING cart_id", [u]).rows[0].decode(0)
                    _ = try await db.query(
                        "INSERT INTO cart_items (cart_id, product_id, product_name, unit_price, quantity) VALUES ($1, $2, 'after the wipe', 4.00, 2)",
                        [cart, product])
                }
            }
            var wrong: [String] = []
            // The service re-creates its topics (within 5 s), rejoins its group and renews its
            // producer; then every partition is served again.
            let admin = try KafkaAdmin(configuration: KafkaConfiguration(["bootstrap.servers": broker.bootstrapServers]), logger: system.logger)
            let responses = [system.topics.name("cart_responses"), system.topics.name("order_responses")]
            var listening = false
            var restarts: [String: Int] = [:]
            var answered = false
            while !answered, ContinuousClock.now - wiped < .seconds(150) {
                // A supervisor: any executable librdkafka crashed after the wipe is started again.
                for name in ["order-service", "product-service", "inventory-service"] {
                    if let p = system.process(name), !p.isRunning {
                        restarts[name, default: 0] += 1
                        print("BROKER WIPE: \(name) exited (status \(await p.waitForExit(timeout: .seconds(1)) ?? -1)); starting it again")
                        try system.startProcess(name)
                    }
                }
                if !listening {
                    let counts = (try? await admin.topicPartitionCounts()) ?? [:]
                    if responses.allSatisfy({ counts[$0] != nil }) {
                        try system.startListening()
                        listening = true

                    } else {
                        try await Task.sleep(for: .seconds(1))
                        continue
                    }
                }
                let outcome = await freshReplies(system, users: fresh, product: product, run: run)
                wrong += outcome.wrong
                answered = outcome.complete
                if !wrong.isEmpty { break }
            }
            let recovery = ContinuousClock.now - wiped
            print("BROKER WIPE recovered after \(recovery), restarts: \(restarts)")
            #expect(wrong.isEmpty, "replies that do not show the state made after the wipe: \(wrong.prefix(3))")
            #expect(answered, "no replies within 150 s of the wipe:\n\(system.process("order-service")?.log.suffix(4000) ?? "")")
            // Generous (about 40 s measured, docs/reliability.md): it protects the fix for an instance
            // stuck with no partitions after the wipe, which never recovers without it.
            #expect(recovery < .seconds(120))
        } catch {
            await system.stop()
            throw error
        }
        await system.stop()
    }

    /// For each user, an `add_item` of `product` (cart request topic) and then a `create_order`
    /// (order request topic), with request ids of this `run`; repeats are idempotent, so the
    /// caller may retry. Complete when every user's replies are `ok` and show exactly that cart and
    /// that order; `wrong` lists replies that contradict it (anything but a transient
    /// `upstream_timeout`, which a retry may cure while the upstream services recover).
    /// One pass over the fresh users: a get_cart (cart topic) and a list_orders (order topic) each,
    /// with request ids made after the wipe. Complete when every reply is right; a reply that is
    /// wrong (not this user's cart made after the wipe) is reported.
    func freshReplies(_ system: TestSystem, users: [Int64], product: Int64, run: String) async -> (complete: Bool, wrong: [String]) {
        await withTaskGroup(of: (Bool, String?).self) { group in
            for u in users {
                group.addTask {
                    do {
                        let cartId = "wipe-\(run)-cart-\(u)"
                        let cart = try await system.request(
                            "cart_requests", .object([("request_id", .string(cartId)), ("action", "get_cart"), ("user_id", .int(u))]),
                            timeout: .seconds(15))
                        let items = cart["cart"]?["items"]?.array ?? []
                        guard cart["status"]?.string == "ok", cart["request_id"]?.string == cartId, items.count == 1,
                            items[0]["product_id"]?.int == product, items[0]["quantity"]?.int == 2
                        else { return (false, "\(cartId): \(cart.text)") }
                        let ordersId = "wipe-\(run)-orders-\(u)"
                        let orders = try await system.request(
                            "order_requests", .object([("request_id", .string(ordersId)), ("action", "list_orders"), ("user_id", .int(u))]),
                            timeout: .seconds(15))
                        guard orders["status"]?.string == "ok", orders["request_id"]?.string == ordersId, orders["orders"]?.array?.isEmpty == true
                        else { return (false, "\(ordersId): \(orders.text)") }
                        return (true, nil)
                    } catch {
                        return (false, nil)  // no reply yet
                    }
                }
            }
            var complete = true
            var wrong: [String] = []
            for await (ok, problem) in group {
                complete = complete && ok
                if let problem { wrong.append(problem) }
            }
            return (complete, wrong)
        }
    }
}

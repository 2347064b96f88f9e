import Foundation
import Kafka
import OrderCore
import Testing
import TestSupport

// Every test below has a time limit of its own, sized to its waits; this one caps any test added
// without one (a hang then fails with "Time limit was exceeded" instead of holding up CI).
@Suite("Reliability", .serialized, .timeLimit(.minutes(30)))
struct ReliabilityTests {
    @Test(
        "hard crash under load: SIGKILL one of two instances; every request answered, every effect applied once",
        .timeLimit(.minutes(8 * scale)))
    func crashUnderLoad() async throws {
        try await withSystem("crash") { system in
            let second = try system.startProcess("order-service", as: "order-service-2")
            if scale > 1 { try system.startProcess("order-service", as: "order-service-2b") }
            // The load starts once the group has settled with both members, so the kill below
            // hits an instance that serves partitions, not one that is still joining.
            try await waitForAssignment(second)
            let product = TestCatalog.uniqueProductId()
            try await TestCatalog.add(product, price: "1.00", stock: 1_000_000)
            let users = (0..<(40 * scale)).map { _ in TestCatalog.uniqueUserId() }
            var ids: Set<String> = []
            /// SIGKILLs `name` while it owns request partitions (waiting for that, bounded, if a
            /// rebalance is under way), and checks from its final log what it owned when it died:
            /// otherwise this would not test a takeover.
            func killOwner(_ name: String) async throws {
                let victim = try #require(system.process(name))
                try await waitUntil("\(name) owned no request partitions before the kill", timeout: .seconds(60)) {
                    !ownedPartitions(victim, of: system).isEmpty
                }
                victim.signal(SIGKILL)
                #expect(await victim.waitForExit(timeout: .seconds(10)) != nil, "\(name) survived SIGKILL")
                let owned = ownedPartitions(victim, of: system)
                print("CRASH killed \(name) owning \(owned.count) request partitions")
                #expect(!owned.isEmpty, "\(name) owned no partitions when it was killed: no takeover tested")
            }
            for round in 0..<15 {
                for u in users {
                    let id = "crash-\(u)-\(round)"
                    ids.insert(id)
                    try await system.send("cart_requests", value: add(u, product, 1, id: id).bytes, key: String(u))
                }
                if round == 5 {
                    try await killOwner("order-service")
                    try system.startProcess("order-service", as: "order-service-3")
                }
                if round == 10 && scale > 1 {
                    try await killOwner("order-service-2")
                    try system.startProcess("order-service", as: "order-service-4")
                }
            }
            // Cart and order requests travel on different topics, so Kafka orders them only per
            // topic: wait for the adds to be answered before ordering.
            let addReplies = try await collectReplies(system, ids: ids, timeout: .seconds(150 * Double(scale)))
            #expect(addReplies.count == ids.count, "unanswered: \(ids.subtracting(addReplies.keys).prefix(5))")
            // One order per user for a third of them, each sent twice.
            for u in users.prefix(12) {
                for _ in 0..<2 {
                    try await system.send(
                        "order_requests",
                        value: JSON.object([("request_id", .string("order-\(u)")), ("action", "create_order"), ("user_id", .int(u))]).bytes,
                        key: String(u))
                }
            }
            let orderIds = Set(users.prefix(12).map { "order-\($0)" })
            let replies = try await collectReplies(system, ids: ids.union(orderIds), timeout: .seconds(150 * Double(scale)))
            #expect(replies.count == ids.count + orderIds.count, "unanswered: \(ids.union(orderIds).subtracting(replies.keys).prefix(5))")
            // Repeats (redeliveries, the duplicate create_order) carry identical bytes.
            for (id, values) in replies { #expect(Set(values).count == 1, "different replies for \(id)") }
            for (id, values) in replies {
                #expect(try JSON.parse(values[0])["status"]?.string == "ok", "\(id): \(String(decoding: values[0], as: UTF8.self))")
            }
            // Every cart holds exactly what was asked (or was ordered in full).
            for u in users.dropFirst(12) {
                let cart = try await system.request("cart_requests", ["action": "get_cart", "user_id": .int(u)])
                #expect(cart["cart"]?["items"]?.array?.first?["quantity"]?.int == 15, "user \(u): \(cart.text)")
            }
            for u in users.prefix(12) {
                let list = try await system.request("order_requests", ["action": "list_orders", "user_id": .int(u)])
                let orders = list["orders"]?.array ?? []
                #expect(orders.count == 1, "user \(u) has \(orders.count) orders")
                #expect(orders.first?["items"]?.array?.first?["quantity"]?.int == 15)
            }
            // One deduction request per order (the outbox may resend after a crash; count distinct
            // orders). The outbox sends after the order's commit: wait for all 12, then check no more.
            func ordered() -> Set<Int64> {
                Set(system.records(on: "inventory_deduction").compactMap { try? JSON.parse($0.value ?? []) }.compactMap { $0["order_id"]?.int })
            }
            try await waitUntil("deduction requests for 12 orders (have \(ordered().count))", timeout: .seconds(30)) { ordered().count >= 12 }
            #expect(ordered().count == 12)
        }
    }

    @Test("a start that fails (the order service exits at once) leaves none of the processes it started running", .timeLimit(.minutes(2)))
    func failedStartStopsItsProcesses() async throws {
        let name = "failstart\(UUID().uuidString.prefix(6).lowercased())"
        let outcome = await TestKafka.result {
            try await TestSystem.start(name, serviceEnvironment: ["ORDER_SERVICE_TOPICS_FILE": "/nonexistent/topics.yaml"])
        }
        #expect(throws: TestSystemError.self) { try outcome.get() }
        // Children of that system carry its prefix in their environment (ORDER_SERVICE_TOPICS_FILE, group id).
        let marker = Array("e2e_\(name)_".utf8)
        let left = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap(Int32.init).filter { pid in
            guard pid != getpid(), let env = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return false }
            return Array(env).firstRange(of: marker) != nil
        }
        #expect(left.isEmpty, "processes of the failed start still run: \(left)")
    }

    @Test(
        "PostgreSQL outage: the service pauses and retries; no request is lost or answered internal_error",
        .timeLimit(.minutes(5)))
    func databaseOutage() async throws {
        // The order service reaches PostgreSQL only through the proxy, whatever DATABASE_URL is
        // (the proxy targets the host and port libpq would use; anything it cannot stand in for
        // fails here instead of letting the service talk to the database directly).
        let (proxy, url) = try await TCPProxy.inFront(of: TestDatabase.url)
        defer { proxy.terminate() }
        let system = try await TestSystem.start("pgoutage", serviceEnvironment: ["DATABASE_URL": url])
        do {
            let service = try #require(system.process("order-service"))
            // It answered a get_cart, so it went through the proxy.
            #expect(proxy.accepted > 0, "the order service never connected through the proxy")
            let product = TestCatalog.uniqueProductId()
            try await TestCatalog.add(product, price: "2.00")
            let users = (0..<20).map { _ in TestCatalog.uniqueUserId() }
            var ids: Set<String> = []
            var retriesBefore = 0
            var openAtCut = 0
            func retries() -> Int {
                service.log.split(separator: "\n").filter { $0.contains("retrying in") && $0.contains("PostgresError") }.count
            }
            for round in 0..<10 {
                if round == 3 {  // the database disappears mid-load…
                    retriesBefore = retries()
                    openAtCut = try await proxy.cut()
                }
                for u in users {
                    let id = "pg-\(u)-\(round)"
                    ids.insert(id)
                    try await system.send("cart_requests", value: add(u, product, 1, id: id).bytes, key: String(u))
                }
                try await Task.sleep(for: .milliseconds(500))  // pacing: rounds spread over 5 s of load
            }
            // …and stays away until the service has shown that it saw the outage (its own
            // "retrying in …" warning, Dispatcher.process), then comes back.
            try await waitUntil("the order service never logged a retry during the outage", timeout: .seconds(30)) {
                retries() > retriesBefore
            }
            let refusedDuringOutage = proxy.refused
            try await proxy.restore()
            print("PG OUTAGE connections open at the cut: \(openAtCut), turned away while cut: \(refusedDuringOutage), retry warnings: \(retries() - retriesBefore)")
            #expect(openAtCut + refusedDuringOutage > 0, "the cut met no connection of the service: it did not depend on the proxy")
            let replies = try await collectReplies(system, ids: ids, timeout: .seconds(90))
            #expect(replies.count == ids.count)
            let codes = replies.values.compactMap { try? JSON.parse($0[0]) }.map { $0["status"]?.string == "ok" ? "ok" : ($0["error"]?["code"]?.string ?? "?") }
            #expect(codes.allSatisfy { $0 == "ok" }, "codes: \(Dictionary(codes.map { ($0, 1) }, uniquingKeysWith: +))")
            for u in users {
                let cart = try await system.request("cart_requests", ["action": "get_cart", "user_id": .int(u)])
                #expect(cart["cart"]?["items"]?.array?.first?["quantity"]?.int == 10)
            }
            #expect(service.isRunning)
            // Connection errors are logged during the outage: none may carry the password.
            expectNoSecretsInLogs(system)
        } catch {
            await system.stop()
            throw error
        }
        await system.stop()
    }

    @Test(
        "hostile input: thousands of malformed records; every one answered, no crash, memory flat, no secrets in logs",
        .timeLimit(.minutes(4 + 3 * scale)))
    func hostileInput() async throws {
        try await withSystem("hostile") { system in
            var generator = SystemRandomNumberGenerator()
            let topics = ["cart_requests", "order_requests", "admin_requests"]
            func hostileValue(_ n: Int) -> [UInt8]? {
                let valid = Array(#"{"request_id":"h\#(n)","action":"add_item","user_id":5,"product_id":7,"quantity":2}"#.utf8)
                switch n % 12 {
                case 0: return (0..<Int.random(in: 0...200, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
                case 1: return Array(valid.prefix(Int.random(in: 0..<valid.count, using: &generator)))  // truncated
                case 2:
                    var v = valid
                    for _ in 0..<3 { v[Int.random(in: 0..<v.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator) }
                    return v  // mutated
                case 3: return Array(#"{"action":"add_item","user_id":"5","product_id":[],"quantity":{}}"#.utf8)  // wrong types
                case 4: return Array(#"{"action":"get_cart","user_id":123456789012345678901234567890}"#.utf8)  // huge number
                case 5: return Array(("{\"action\":\"get_cart\",\"user_id\":1,\"x\":\"" + String(repeating: "A", count: 200_000) + "\"}").utf8)
                case 6: return Array((String(repeating: "[", count: 5_000) + String(repeating: "]", count: 5_000)).utf8)  // deep nesting
                case 7: return nil  // null value
                case 8: return Array(#"{"action":"\#(String(repeating: "z", count: 50_000))","user_id":1}"#.utf8)
                case 9: return Array(#"{"action":"update_item","user_id":-1,"product_id":0,"quantity":99999999}"#.utf8)
                case 10: return Array(#"{"action":"list_carts","limit":1e308}"#.utf8)
                default: return Array(#"{"request_id":null,"action":null}"#.utf8)
                }
            }
            func send(_ range: Range<Int>) async throws -> Set<String> {
                var ids: Set<String> = []
                for n in range {
                    let id = "hostile-\(n)"
                    ids.insert(id)
                    let headers = [
                        KafkaHeader("correlation-id", id), KafkaHeader("x-unknown-\(n % 7)", "v"),
                        KafkaHeader(key: "x-bad-utf8", value: [0xFF, 0xFE, 0xC3]), KafkaHeader(key: "x-null", value: nil),
                    ]
                    let key: String? = n % 5 == 0 ? nil : "u\(n % 50)"
                    try await system.send(topics[n % 3], value: hostileValue(n), key: key, headers: headers)
                }
                return ids
            }
            func answered(_ ids: Set<String>, timeout: Duration) async throws -> Set<String> {
                let deadline = ContinuousClock.now + timeout
                var got: Set<String> = []
                while ContinuousClock.now < deadline {
                    got = Set((system.records(on: "cart_responses") + system.records(on: "order_responses") + system.records(on: "admin_responses"))
                        .compactMap { $0.header("correlation-id")?.stringValue }).intersection(ids)
                    if got.count == ids.count { break }
                    try await Task.sleep(for: .milliseconds(250))
                }
                return got
            }
            let service = try #require(system.process("order-service"))
            let warm = try await send(0..<300)
            #expect(try await answered(warm, timeout: .seconds(60)).count == warm.count)
            let rssBefore = try rssMegabytes(service.pid)
            let main = try await send(300..<(300 + 1_800 * scale))
            let got = try await answered(main, timeout: .seconds(120 * Double(scale)))
            #expect(got.count == main.count, "unanswered: \(main.subtracting(got).sorted().prefix(10))")
            #expect(service.isRunning)
            let rssAfter = try rssMegabytes(service.pid)
            #expect(rssAfter - rssBefore < 40, "RSS grew from \(rssBefore) MB to \(rssAfter) MB")
            // Every reply is a contract error or a valid answer, never internal_error; the service still works.
            let replies = (system.records(on: "cart_responses") + system.records(on: "order_responses") + system.records(on: "admin_responses"))
                .filter { $0.header("correlation-id")?.stringValue?.hasPrefix("hostile-") == true }
                .compactMap { try? JSON.parse($0.value ?? []) }
            #expect(!replies.contains { $0["error"]?["code"]?.string == "internal_error" })
            let ok = try await system.request("cart_requests", ["action": "get_cart", "user_id": 77])
            #expect(ok["status"]?.string == "ok")
            // No secret (the password of the URL each process got, any password in the environment)
            // in any process's log, nor SQL or a URL in replies.
            expectNoSecretsInLogs(system)
            #expect(!replies.contains { $0.text.contains("SELECT") || $0.text.contains("postgresql://") })
        }
    }

    @Test(
        "backlog: requests produced while the service is down are worked through in order with bounded memory",
        .timeLimit(.minutes(2 + 4 * scale)))
    func backlog() async throws {
        try await withSystem("backlog", environment: ["ORDER_SERVICE_MAX_IN_FLIGHT": "500"]) { system in
            let service = try #require(system.process("order-service"))
            await service.stop()
            let product = TestCatalog.uniqueProductId()
            try await TestCatalog.add(product, price: "0.50")
            let users = (0..<(300 * scale)).map { _ in TestCatalog.uniqueUserId() }
            var ids: Set<String> = []
            for u in users { try await system.send("cart_requests", value: add(u, product, 1, id: "b-\(u)-0").bytes, key: String(u)) }
            ids.formUnion(users.map { "b-\($0)-0" })
            for q in 1...10 {
                for u in users {
                    let id = "b-\(u)-\(q)"
                    ids.insert(id)
                    try await system.send(
                        "cart_requests",
                        value: JSON.object([("request_id", .string(id)), ("action", "update_item"), ("user_id", .int(u)), ("product_id", .int(product)), ("quantity", .int(Int64(q)))]).bytes,
                        key: String(u))
                }
            }
            let restarted = try system.startProcess("order-service", as: "order-service-restarted")
            let replies = try await collectReplies(system, ids: ids, timeout: .seconds(180 * Double(scale)))
            #expect(replies.count == ids.count)
            // Per-user order: each update's reply shows its own quantity.
            for u in users.prefix(30) {
                for q in 1...10 {
                    let r = try JSON.parse(try #require(replies["b-\(u)-\(q)"]?.first))
                    #expect(r["cart"]?["items"]?.array?.first?["quantity"]?.int == Int64(q))
                }
            }
            #expect(restarted.isRunning, "the restarted service died:\n\(restarted.log.suffix(3000))")
            let rss = try rssMegabytes(restarted.pid)  // throws (fails) when /proc cannot tell
            #expect(rss < 150, "RSS \(rss) MB after the backlog")
        }
    }
}

import Foundation
import Kafka
import OrderCore
import Testing
import TestSupport

extension ReliabilityTests {
    @Test(
        "crash loop: a request that kills the process is answered internal_error and dead-lettered after a few restarts; every other request answered, the service stays up",
        .timeLimit(.minutes(8)))
    func crashLoop() async throws {
        let token = "poison\(UUID().uuidString.prefix(8).lowercased())"
        let system = try await TestSystem.start(
            "crashloop",
            // No backtrace printing: the crash itself is the point, and each restart comes sooner.
            serviceEnvironment: ["ORDER_SERVICE_TEST_CRASH_ON": token, "SWIFT_BACKTRACE": "enable=no"])
        do {
            let product = TestCatalog.uniqueProductId()
            try await TestCatalog.add(product, price: "1.00", stock: 1_000_000)
            let users = (0..<12).map { _ in TestCatalog.uniqueUserId() }
            let victim = users[0]
            let poisonId = "add-\(token)"
            var ids: Set<String> = []
            // The poison sits between the victim's own requests: the ones behind it wait for it.
            for round in 0..<6 {
                for u in users {
                    if u == victim && round == 3 {
                        try await system.send("cart_requests", value: add(u, product, 50, id: poisonId).bytes, key: String(u))
                    }
                    let id = "cl-\(u)-\(round)"
                    ids.insert(id)
                    try await system.send("cart_requests", value: add(u, product, 1, id: id).bytes, key: String(u))
                }
            }

            // A supervisor: restart the service whenever it died, a bounded number of times.
            var crashes: [Int32] = []
            var replies: [String: [[UInt8]]] = [:]
            let deadline = ContinuousClock.now + .seconds(300)
            while ContinuousClock.now < deadline {
                replies = try await collectReplies(system, ids: ids.union([poisonId]), timeout: .milliseconds(500))
                if replies.count == ids.count + 1 { break }
                if let p = system.process("order-service"), !p.isRunning {
                    crashes.append(await p.waitForExit(timeout: .seconds(5)) ?? -1)
                    guard crashes.count <= 8 else { break }
                    try system.startProcess("order-service")
                }
            }
            print("CRASHLOOP crashes=\(crashes.count) statuses=\(crashes)")
            #expect(replies[poisonId] != nil, "the poison was never answered (\(crashes.count) crashes)")
            #expect(crashes.count >= 1 && crashes.count <= 8)
            #expect(Set(ids).subtracting(replies.keys).isEmpty, "unanswered: \(ids.subtracting(replies.keys).prefix(5))")

            // The poison: exactly one internal_error reply and a dead-letter copy saying why.
            let poisonReplies = replies[poisonId] ?? []
            #expect(poisonReplies.count == 1)
            if let first = poisonReplies.first {
                let reply = try JSON.parse(first)
                #expect(reply["status"]?.string == "error")
                #expect(reply["error"]?["code"]?.string == "internal_error")
                #expect(reply["error"]?["message"]?.string?.contains("stopped the service repeatedly") == true)
            }
            let dead = try await system.waitFor(timeout: .seconds(30)) { r in
                r.topic == system.topics.name("order_service_dlq") && String(decoding: r.value ?? [], as: UTF8.self).contains(token)
            }
            #expect(dead.header("dlq-error")?.stringValue?.hasPrefix("crash loop:") == true)
            #expect(system.records(on: "order_service_dlq").filter { String(decoding: $0.value ?? [], as: UTF8.self).contains(token) }.count == 1)

            // Every other request: answered ok; a redelivery after a crash repeats the same bytes.
            for id in ids {
                let values = replies[id] ?? []
                #expect(Set(values).count == 1, "different replies for \(id)")
                if let v = values.first { #expect(try JSON.parse(v)["status"]?.string == "ok", "\(id): \(String(decoding: v, as: UTF8.self))") }
            }
            // Effects once each, and the poison's not at all.
            for u in users {
                let cart = try await system.request("cart_requests", ["action": "get_cart", "user_id": .int(u)], timeout: .seconds(60))
                #expect(cart["cart"]?["items"]?.array?.first?["quantity"]?.int == 6, "user \(u): \(cart.text)")
            }

            // It stays up and serves new requests, the victim's included. (The 5 s are the
            // observation: a service that still crashed on a redelivered poison would die in them.)
            try await Task.sleep(for: .seconds(5))
            #expect(system.process("order-service")?.isRunning == true)
            let after = try await system.request(
                "cart_requests", add(victim, product, 1, id: "cl-after-\(victim)"), timeout: .seconds(60))
            #expect(after["status"]?.string == "ok", "\(after.text)")
            let cart = try await system.request("cart_requests", ["action": "get_cart", "user_id": .int(victim)], timeout: .seconds(60))
            #expect(cart["cart"]?["items"]?.array?.first?["quantity"]?.int == 7, "\(cart.text)")
            #expect(system.process("order-service")?.isRunning == true)
        } catch {
            await system.stop()
            throw error
        }
        await system.stop()
    }
}

import Foundation
import Kafka
import OrderCore
import Testing
import TestSupport

extension EndToEndTests {
    /// The heartbeat follows progress: idle longer than the bound is healthy; a record that never
    /// finishes (the test-only wedge switch) makes `health` and `health --ready` fail within the
    /// bound plus `--max-age`, while other users are still answered.
    @Test("probes see progress: healthy and ready while idle, unhealthy within the bound once a record is wedged")
    func probesSeeProgress() async throws {
        let marker = "wedge-\(UUID().uuidString.prefix(8))"
        let bound = 6
        let maxAge = "15"  // three heartbeat intervals (5 s): a write late on a busy box is not a failure
        let system = try await TestSystem.start(
            "health", serviceEnvironment: ["ORDER_SERVICE_TEST_WEDGE_ON": marker, "ORDER_SERVICE_PROGRESS_BOUND_S": String(bound)])
        let health = ["health", "--file", system.healthFile, "--max-age", maxAge]
        func cleanUp() async {
            // The wedged record never finishes, so a graceful stop would wait for it.
            system.process("order-service")?.signal(SIGKILL)
            await system.stop()
            try? FileManager.default.removeItem(atPath: system.healthFile)
            try? FileManager.default.removeItem(atPath: Heartbeat.readyPath(for: system.healthFile))
        }
        do {
            // Ready once the group consumer's statistics show a settled group (every 5 s).
            var ready = try await system.runCommand(health + ["--ready"])
            let readyDeadline = ContinuousClock.now + .seconds(60)
            while ready.status != 0 && ContinuousClock.now < readyDeadline {
                try await Task.sleep(for: .seconds(1))
                ready = try await system.runCommand(health + ["--ready"])
            }
            #expect(ready.status == 0, "\(ready.output)")

            // Idle (nothing waiting) for more than twice the bound: healthy throughout.
            let idleUntil = ContinuousClock.now + .seconds(bound * 2 + 3)
            while ContinuousClock.now < idleUntil {
                let r = try await system.runCommand(health)
                #expect(r.status == 0, "idle: \(r.output)")
                try await Task.sleep(for: .seconds(2))
            }
            #expect(try await system.runCommand(health + ["--ready"]).status == 0)

            // The wedging record, then normal requests of other users: those are still answered.
            let wedgedUser = TestCatalog.uniqueUserId()
            try await system.send(
                "cart_requests", value: Array(#"{"action":"get_cart","user_id":\#(wedgedUser),"request_id":"\#(marker)"}"#.utf8),
                key: String(wedgedUser), headers: [KafkaHeader("correlation-id", UUID().uuidString)])
            let wedgedAt = ContinuousClock.now
            for _ in 0..<3 {
                let reply = try await system.request("cart_requests", ["action": "get_cart", "user_id": .int(TestCatalog.uniqueUserId())])
                expectOK(reply, "get_cart")
            }

            // Fails within the bound + max-age (+ one heartbeat interval and slack for this box).
            var r = try await system.runCommand(health)
            let failDeadline = wedgedAt + .seconds(bound + 15 + 5 + 30)
            while r.status == 0 && ContinuousClock.now < failDeadline {
                try await Task.sleep(for: .seconds(1))
                r = try await system.runCommand(health)
            }
            #expect(r.status == 1, "health still passes \(ContinuousClock.now - wedgedAt) after the wedge: \(r.output)")
            #expect(ContinuousClock.now - wedgedAt >= .seconds(bound), "failed before the bound")
            #expect(try await system.runCommand(health + ["--ready"]).status == 1)
            let log = system.process("order-service")?.log ?? ""
            #expect(log.contains("no progress: heartbeat stopped"), "\(log.suffix(2000))")
            #expect(system.process("order-service")?.isRunning == true, "the service itself keeps running; the probe restarts it")
        } catch {
            await cleanUp()
            throw error
        }
        await cleanUp()
    }
}

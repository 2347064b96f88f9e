import Foundation
import Kafka
import OrderCore
import Testing
import TestSupport

extension ReliabilityTests {
    /// Sends get_cart and list_orders for users spread over every partition of both request
    /// topics and returns the slowest reply time. (Both topics: an assignor that balances the
    /// total, like cooperative-sticky, may give one member all partitions of one topic.)
    func slowestReply(_ system: TestSystem, users: [Int64], timeout: Duration = .seconds(60)) async throws -> Duration {
        try await withThrowingTaskGroup(of: Duration.self) { group in
            for u in users {
                for (topic, action) in [("cart_requests", "get_cart"), ("order_requests", "list_orders")] {
                    group.addTask {
                        let t0 = ContinuousClock.now
                        _ = try await system.request(topic, ["action": .string(action), "user_id": .int(u)], timeout: timeout)
                        return ContinuousClock.now - t0
                    }
                }
            }
            var worst = Duration.zero
            for try await d in group { worst = max(worst, d) }
            return worst
        }
    }

    /// Waits until the process's log shows that it owns partitions (`count` assignments so far).
    func waitForAssignment(_ p: ChildProcess, count: Int = 1, timeout: Duration = .seconds(90)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if p.log.components(separatedBy: "partitions assigned").count - 1 >= count { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw TestSystemError("\(p.name) got no partitions within \(timeout)")
    }

    @Test(
        "takeover: partitions of a stopped instance are served again after SIGTERM (a graceful hand-over) and after SIGKILL (the session timeout)",
        .timeLimit(.minutes(6)))
    func takeover() async throws {
        try await withSystem("takeover") { system in
            let first = try #require(system.process("order-service"))
            let second = try system.startProcess("order-service", as: "order-service-2")
            let users = (0..<64).map { _ in TestCatalog.uniqueUserId() }
            try await waitForAssignment(second)  // both members are serving
            _ = try await slowestReply(system, users: users)

            // SIGTERM: the instance hands its partitions over (revokes, commits, leaves) and exits 0.
            #expect(!ownedPartitions(first, of: system).isEmpty, "order-service owned nothing: no hand-over to test")
            first.signal(SIGTERM)
            let afterTerm = try await slowestReply(system, users: users)
            #expect(await first.waitForExit(timeout: .seconds(30)) == 0, "SIGTERM did not end order-service cleanly:\n\(first.log.suffix(2000))")
            #expect(ownedPartitions(first, of: system).isEmpty, "order-service exited without revoking its partitions")
            #expect(first.log.contains("partitions revoked"), "no graceful revoke in the log of order-service")
            let third = try system.startProcess("order-service", as: "order-service-3")
            try await waitForAssignment(third)
            _ = try await slowestReply(system, users: users)

            // SIGKILL: its partitions wait for the session timeout, then move.
            try await waitUntil("order-service-2 owned no request partitions", timeout: .seconds(60)) {
                !ownedPartitions(second, of: system).isEmpty
            }
            second.signal(SIGKILL)
            #expect(await second.waitForExit(timeout: .seconds(10)) != nil)
            #expect(!ownedPartitions(second, of: system).isEmpty, "order-service-2 owned nothing when killed: no takeover tested")
            let afterKill = try await slowestReply(system, users: users)
            print("TAKEOVER sigterm=\(afterTerm) sigkill=\(afterKill)")
            // Wall-clock bounds, generous for a shared 2-core machine (measured here: a few seconds
            // each). What they protect: partitions of a departed member must not wait for the group's
            // 60-s rebalance timeout (max.poll.interval.ms), nor stay unserved; both stay below it.
            // That a graceful stop is a hand-over, not a time-out, is checked above from the log.
            #expect(afterTerm < .seconds(30))
            #expect(afterKill < .seconds(45))
        }
    }
}

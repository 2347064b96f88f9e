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

    @Test("takeover: partitions of a stopped instance are served again quickly after SIGTERM, and after SIGKILL within the session timeout")
    func takeover() async throws {
        try await withSystem("takeover") { system in
            let second = try system.startProcess("order-service", as: "order-service-2")
            let users = (0..<64).map { _ in TestCatalog.uniqueUserId() }
            try await waitForAssignment(second)  // both members are serving
            _ = try await slowestReply(system, users: users)

            system.process("order-service")?.signal(SIGTERM)
            let afterTerm = try await slowestReply(system, users: users)
            let third = try system.startProcess("order-service", as: "order-service-3")
            try await waitForAssignment(third)
            _ = try await slowestReply(system, users: users)

            system.process("order-service-2")?.signal(SIGKILL)
            let afterKill = try await slowestReply(system, users: users)
            print("TAKEOVER sigterm=\(afterTerm) sigkill=\(afterKill)")
            #expect(afterTerm < .seconds(10))
            #expect(afterKill < .seconds(30))
        }
    }
}

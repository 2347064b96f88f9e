import Foundation
import Postgres
import Synchronization
import TestSupport
import Testing

/// PostgresClient: transactions, pooling, recovery from lost connections.
@Suite(.timeLimit(.minutes(2))) struct PoolTests {
    struct Boom: Error {}

    /// Shared state for closures a task group or unstructured task runs.
    final class Shared<Value: Sendable>: Sendable {
        private let state: Mutex<Value>
        init(_ value: Value) { state = Mutex(value) }
        func withLock<R: Sendable>(_ body: (inout Value) -> R) -> R { state.withLock { body(&$0) } }
    }

    @Test func transactionCommitsOrRollsBack() async throws {
        try await TestDatabase.withClient { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int PRIMARY KEY") { table in
                let value = try await client.transaction { connection in
                    _ = try await connection.query("INSERT INTO \(table) VALUES ($1)", [1])
                    return 42
                }
                #expect(value == 42)
                await #expect(throws: Boom.self) {
                    try await client.transaction { connection in
                        _ = try await connection.query("INSERT INTO \(table) VALUES ($1)", [2])
                        _ = try await connection.query("INSERT INTO \(table) VALUES ($1)", [3])
                        throw Boom()
                    }
                }
                // A failed statement whose error the body swallows: COMMIT turns into ROLLBACK; reported.
                let swallowed = try await #require(throws: PostgresError.self) {
                    try await client.transaction { connection in
                        _ = try await connection.query("INSERT INTO \(table) VALUES ($1)", [4])
                        _ = try? await connection.query("INSERT INTO \(table) VALUES ($1)", [1])
                    }
                }
                #expect(swallowed.kind == .query)
                let ids = try await client.query("SELECT id FROM \(table) ORDER BY id").rows
                #expect(try ids.map { try $0.decode(0, as: Int.self) } == [1])
            }
        }
    }

    @Test func aTransactionLeftOpenIsRolledBackBeforeReuse() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int") { table in
                try await client.withConnection { connection in
                    try await connection.execute("BEGIN")
                    _ = try await connection.query("INSERT INTO \(table) VALUES ($1)", [1])
                }
                // Same (only) connection: were its transaction still open, it would see its own row.
                let count = try await client.query("SELECT count(*) FROM \(table)")
                #expect(try count.rows[0].decode(0, as: Int.self) == 0)
            }
        }
    }

    @Test func reconnectsAfterTheBackendIsKilled() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            let pid = try await client.query("SELECT pg_backend_pid()").rows[0].decode(0, as: Int32.self)
            try await TestDatabase.withClient(poolSize: 1) { admin in
                // The timeout makes pg_terminate_backend wait until the backend has exited.
                let killed = try await admin.query("SELECT pg_terminate_backend($1, 5000)", [pid])
                #expect(try killed.rows[0].decode(0, as: Bool.self))
            }
            do {
                _ = try await client.query("SELECT 1")
            } catch let error as PostgresError {
                #expect(error.kind == .connection)
                #expect(error.isRetriable)
            }
            let newPID = try await client.query("SELECT pg_backend_pid()").rows[0].decode(0, as: Int32.self)
            #expect(newPID != pid)
        }
    }

    @Test func twoConnectionsServeTwentyConcurrentQueries() async throws {
        try await TestDatabase.withClient(poolSize: 2) { client in
            // Every body waits (bounded) until two bodies have held a connection at the same time, so
            // the pool must really open its second connection: a pool that serves everything over one
            // fails here instead of passing with a single backend.
            let lent = Shared((now: 0, most: 0))
            let results = try await withThrowingTaskGroup(of: (Int, Int, Int32).self) { group in
                for i in 0..<20 {
                    group.addTask {
                        try await client.withConnection { connection in
                            lent.withLock {
                                $0.now += 1
                                $0.most = max($0.most, $0.now)
                            }
                            defer { lent.withLock { $0.now -= 1 } }
                            try await TestKafka.eventually("a second connection lent at the same time", timeout: .seconds(20)) {
                                lent.withLock { $0.most >= 2 }
                            }
                            let row = try await connection.query(
                                "SELECT $1::int, pg_backend_pid() FROM pg_sleep(0.05)", [i]
                            ).rows[0]
                            return (i, try row.decode(0, as: Int.self), try row.decode(1, as: Int32.self))
                        }
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(results.count == 20)
            #expect(Set(results.map(\.0)) == Set(0..<20))
            #expect(results.allSatisfy { $0.0 == $0.1 })
            #expect(Set(results.map(\.2)).count == 2, "two backends served the queries, no third was opened")
            #expect(lent.withLock { $0.most } == 2, "never more connections lent out than the pool's size")
        }
    }

    @Test func aCancelledWaiterLeavesTheQueue() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            // The holder keeps the only connection until the test has seen the waiter give up, so the
            // waiter cannot be rescued by the connection coming back: only leaving the queue ends it.
            let holding = Shared(false)
            let release = AsyncStream<Void>.makeStream()
            let holder = Task {
                try await client.withConnection { connection in
                    _ = try await connection.query("SELECT 1")
                    holding.withLock { $0 = true }
                    for await _ in release.stream {}
                }
            }
            try await TestKafka.eventually("the holder has the only connection", timeout: .seconds(20)) {
                holding.withLock { $0 }
            }
            let waiter = Task { try await client.query("SELECT 1") }
            // Give the waiter time to queue (best effort: cancelled before queueing, it must fail the same way).
            try await Task.sleep(for: .milliseconds(100))
            waiter.cancel()
            // Bounded: were cancellation not to remove the waiter from the queue, it would wait forever.
            let outcome = await TestKafka.result {
                try await TestKafka.within(.seconds(10), "the cancelled waiter (still queued?)") {
                    try await waiter.value
                }
            }
            switch outcome {
            case .success: Issue.record("the cancelled waiter got a connection the holder still has")
            case .failure(let error as TestKafkaError): Issue.record("\(error)")
            case .failure(let error): #expect(error is CancellationError, "\(error)")
            }
            release.continuation.finish()
            try await TestKafka.within(.seconds(10), "the holder") { try await holder.value }
            // The slot is not lost to the cancelled waiter: the next caller gets the connection.
            let four = try await TestKafka.within(.seconds(10), "a query after the cancelled waiter") {
                try await client.query("SELECT 4").rows[0].decode(0, as: Int.self)
            }
            #expect(four == 4)
        }
    }

    @Test func aClosedClientRefusesWork() async throws {
        let client = TestDatabase.client()
        _ = try await client.query("SELECT 1")
        await client.close()
        let error = try await #require(throws: PostgresError.self) { _ = try await client.query("SELECT 1") }
        #expect(error.kind == .closed)
    }

    @Test func onlyCallersThatQueuedForAConnectionReportTheirWait() async throws {
        let waits = Shared<[Duration]>([])
        let client = PostgresClient(
            configuration: TestDatabase.configuration(poolSize: 1), logger: TestDatabase.logger,
            onWait: { d in waits.withLock { $0.append(d) } })
        // The holder has the only connection (seen, not assumed) and keeps it until released; the
        // waiter queues behind it meanwhile. On a busy pool its task may start late: the wait it
        // reports is then shorter, but it is still the only one.
        let holdingIt = Shared(false)
        let release = AsyncStream<Void>.makeStream()
        let holding = Task {
            try await client.withConnection { c in
                _ = try await c.query("SELECT 1")
                holdingIt.withLock { $0 = true }
                for await _ in release.stream {}
            }
        }
        try await TestKafka.eventually("the holder has the only connection", timeout: .seconds(20)) { holdingIt.withLock { $0 } }
        let waiter = Task { _ = try await client.query("SELECT 1") }  // queues behind it
        try await Task.sleep(for: .milliseconds(300))
        release.continuation.finish()
        try await holding.value
        try await waiter.value
        _ = try await client.query("SELECT 1")  // the idle connection: no wait
        let seen = waits.withLock { $0 }
        #expect(seen.count == 1)
        #expect((seen.first ?? .zero) > .zero)
        await client.close()
    }
}

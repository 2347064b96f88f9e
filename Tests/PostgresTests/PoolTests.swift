import Foundation
import Postgres
import TestSupport
import Testing

/// PostgresClient: transactions, pooling, recovery from lost connections.
@Suite struct PoolTests {
    struct Boom: Error {}

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
            let results = try await withThrowingTaskGroup(of: (Int, Int, Int32).self) { group in
                for i in 0..<20 {
                    group.addTask {
                        let row = try await client.query(
                            "SELECT $1::int, pg_backend_pid() FROM pg_sleep(0.05)", [i]
                        ).rows[0]
                        return (i, try row.decode(0, as: Int.self), try row.decode(1, as: Int32.self))
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(results.count == 20)
            #expect(results.allSatisfy { $0.0 == $0.1 })
            let pids = Set(results.map(\.2))
            #expect(pids.count <= 2)
            #expect(!pids.isEmpty)
        }
    }

    @Test func aCancelledWaiterLeavesTheQueue() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            let holder = Task {
                try await client.withConnection { connection in
                    _ = try await connection.query("SELECT pg_sleep(1)")
                }
            }
            try await Task.sleep(for: .milliseconds(200))
            let waiter = Task { try await client.query("SELECT 1") }
            try await Task.sleep(for: .milliseconds(100))
            waiter.cancel()
            await #expect(throws: CancellationError.self) { _ = try await waiter.value }
            try await holder.value
            #expect(try await client.query("SELECT 4").rows[0].decode(0, as: Int.self) == 4)
        }
    }

    @Test func aClosedClientRefusesWork() async throws {
        let client = TestDatabase.client()
        _ = try await client.query("SELECT 1")
        await client.close()
        let error = try await #require(throws: PostgresError.self) { _ = try await client.query("SELECT 1") }
        #expect(error.kind == .closed)
    }
}

import Foundation
import Postgres
import Synchronization
import TestSupport
import Testing

/// `transactionOnQueue` and `onQueue`: a whole transaction (or several statements) in one hand-off
/// to the connection's queue, with the semantics of the async `transaction`.
@Suite(.timeLimit(.minutes(2))) struct OneHopTransactionTests {
    struct Boom: Error {}

    final class Flag: Sendable {
        private let value = Mutex(false)
        func set() { value.withLock { $0 = true } }
        var isSet: Bool { value.withLock { $0 } }
    }

    /// The pool's only connection: its backend, whether it is healthy, and its hand-offs so far
    /// (reading them is no hand-off).
    func connection(_ client: PostgresClient) async throws -> (pid: Int32, broken: Bool, handOffs: UInt64) {
        try await client.withConnection { ($0.backendPID, $0.isBroken, $0.handOffs) }
    }

    func ids(_ client: PostgresClient, _ table: String) async throws -> [Int] {
        try await client.query("SELECT id FROM \(table) ORDER BY id").rows.map { try $0.decode(0, as: Int.self) }
    }

    /// After each outcome the same connection serves again, outside any transaction.
    func expectReusable(_ client: PostgresClient, pid: Int32, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let now = try await connection(client)
        #expect(now.pid == pid, "the same backend", sourceLocation: sourceLocation)
        #expect(!now.broken, sourceLocation: sourceLocation)
        let state = try await TestDatabase.withClient(poolSize: 1) { observer in
            try await observer.query("SELECT state FROM pg_stat_activity WHERE pid = $1", [pid]).rows.first?.decode(0, as: String.self)
        }
        #expect(state == "idle", "no transaction left open", sourceLocation: sourceLocation)
    }

    @Test func commitsAWholeTransactionInOneHandOff() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int PRIMARY KEY") { table in
                let before = try await connection(client)
                let value = try await client.transactionOnQueue { conn in
                    _ = try conn.query("INSERT INTO \(table) VALUES ($1)", [1])
                    _ = try conn.query("INSERT INTO \(table) VALUES ($1)", [2])
                    return try conn.query("SELECT count(*) FROM \(table)").rows[0].decode(0, as: Int.self)
                }
                #expect(value == 2)
                #expect(try await connection(client).handOffs - before.handOffs == 1, "BEGIN, three statements, COMMIT: one hand-off")
                #expect(try await ids(client, table) == [1, 2])
                try await expectReusable(client, pid: before.pid)
                // A body without statements sends no BEGIN or COMMIT: still the one hand-off.
                let idle = try await connection(client).handOffs
                #expect(try await client.transactionOnQueue { _ in 7 } == 7)
                #expect(try await connection(client).handOffs - idle == 1)
                try await expectReusable(client, pid: before.pid)
            }
        }
    }

    @Test func rollsBackWhenTheBodyThrows() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int PRIMARY KEY") { table in
                let pid = try await connection(client).pid
                await #expect(throws: Boom.self) {
                    try await client.transactionOnQueue { conn in
                        _ = try conn.query("INSERT INTO \(table) VALUES ($1)", [1])
                        throw Boom()
                    }
                }
                #expect(try await ids(client, table) == [])
                try await expectReusable(client, pid: pid)
            }
        }
    }

    @Test func aFailingStatementRollsBackAndItsErrorIsRethrown() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int PRIMARY KEY") { table in
                _ = try await client.query("INSERT INTO \(table) VALUES ($1)", [1])
                let pid = try await connection(client).pid
                let error = try await #require(throws: PostgresError.self) {
                    try await client.transactionOnQueue { conn in
                        _ = try conn.query("INSERT INTO \(table) VALUES ($1)", [2])
                        _ = try conn.query("INSERT INTO \(table) VALUES ($1)", [1])
                    }
                }
                #expect(error.kind == .query)
                #expect(error.sqlState == "23505", "\(error)")  // unique_violation
                #expect(!error.isRetriable)
                #expect(try await ids(client, table) == [1])
                try await expectReusable(client, pid: pid)
            }
        }
    }

    @Test func aCaughtStatementErrorMakesCommitRollBackAndThatIsReported() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int PRIMARY KEY") { table in
                _ = try await client.query("INSERT INTO \(table) VALUES ($1)", [1])
                let pid = try await connection(client).pid
                let error = try await #require(throws: PostgresError.self) {
                    try await client.transactionOnQueue { conn in
                        _ = try conn.query("INSERT INTO \(table) VALUES ($1)", [4])
                        _ = try? conn.query("INSERT INTO \(table) VALUES ($1)", [1])
                    }
                }
                #expect(error.kind == .query)
                #expect(error.message.contains("rolled back"), "\(error)")
                #expect(try await ids(client, table) == [1])
                try await expectReusable(client, pid: pid)
            }
        }
    }

    @Test func aCancelledTaskStartsNothing() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            let pid = try await connection(client).pid
            let ran = Flag()
            let task = Task {
                withUnsafeCurrentTask { $0?.cancel() }
                return try await client.transactionOnQueue { conn in
                    ran.set()
                    return try conn.query("SELECT 1").rows.count
                }
            }
            let outcome = await task.result
            #expect(throws: CancellationError.self) { try outcome.get() }
            #expect(!ran.isSet, "the body never ran")
            try await expectReusable(client, pid: pid)
        }
    }

    @Test func cancellingTheTaskCancelsTheRunningStatementAndRollsBack() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int") { table in
                let pid = try await connection(client).pid
                let started = ContinuousClock.now
                let task = Task {
                    try await client.transactionOnQueue { conn in
                        _ = try conn.query("INSERT INTO \(table) VALUES ($1)", [1])
                        _ = try conn.query("SELECT pg_sleep(30)")
                    }
                }
                try await TestDatabase.waitUntilSleeping(backend: pid)
                task.cancel()
                let error = try await #require(throws: PostgresError.self) {
                    try await TestKafka.within(.seconds(20), "the cancelled transaction") { try await task.value }
                }
                #expect(error.sqlState == "57014", "\(error)")  // query_canceled
                #expect(ContinuousClock.now - started < .seconds(20))
                #expect(try await ids(client, table) == [])
                try await expectReusable(client, pid: pid)
            }
        }
    }

    @Test func aCancelBetweenStatementsStopsBeforeTheNextAndRollsBack() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int") { table in
                let pid = try await connection(client).pid
                let inserted = Flag()
                let cancelled = Flag()
                let task = Task {
                    try await client.transactionOnQueue { conn in
                        _ = try conn.query("INSERT INTO \(table) VALUES ($1)", [1])
                        inserted.set()
                        // Between statements (bounded): the test cancels the task meanwhile.
                        let deadline = ContinuousClock.now + .seconds(20)
                        while !cancelled.isSet && ContinuousClock.now < deadline { usleep(1_000) }
                        _ = try conn.query("INSERT INTO \(table) VALUES ($1)", [2])
                    }
                }
                try await TestKafka.eventually("the first insert", timeout: .seconds(20)) { inserted.isSet }
                task.cancel()
                cancelled.set()
                let outcome = await TestKafka.result {
                    try await TestKafka.within(.seconds(20), "the cancelled transaction") { try await task.value }
                }
                #expect(throws: CancellationError.self) { try outcome.get() }
                #expect(try await ids(client, table) == [])
                try await expectReusable(client, pid: pid)
            }
        }
    }

    @Test func aConnectionLostInsideIsBrokenAndReplaced() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            let pid = try await connection(client).pid
            let error = try await #require(throws: PostgresError.self) {
                try await client.transactionOnQueue { conn in
                    _ = try conn.query("SELECT 1")
                    // The backend ends itself: the statement fails and so does the ROLLBACK.
                    _ = try conn.query("SELECT pg_terminate_backend(pg_backend_pid())")
                }
            }
            // Lost (.connection) or the server's last word (57P01); retriable either way.
            #expect(error.isRetriable, "\(error)")
            let next = try await connection(client)
            #expect(next.pid != pid, "the broken connection was dropped, a new one opened")
            #expect(!next.broken)
        }
    }

    @Test func onQueueRunsSeveralStatementsInOneHandOffAlsoInsideATransaction() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int") { table in
                let before = try await connection(client)
                let count = try await client.onQueue { conn in
                    _ = try conn.query("INSERT INTO \(table) VALUES ($1)", [1])
                    return try conn.query("SELECT count(*) FROM \(table)").rows[0].decode(0, as: Int.self)
                }
                #expect(count == 1)
                #expect(try await connection(client).handOffs - before.handOffs == 1)
                // In an async transaction the pending BEGIN goes first, so the rollback takes it back.
                await #expect(throws: Boom.self) {
                    try await client.transaction { connection in
                        try await connection.onQueue { conn in
                            _ = try conn.query("INSERT INTO \(table) VALUES ($1)", [2])
                            _ = try conn.query("INSERT INTO \(table) VALUES ($1)", [3])
                        }
                        throw Boom()
                    }
                }
                #expect(try await ids(client, table) == [1])
                try await expectReusable(client, pid: before.pid)
            }
        }
    }

    @Test func anAsyncTransactionsLastHandOffCanCarryItsCommit() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int PRIMARY KEY") { table in
                let before = try await connection(client)
                try await client.transaction { connection in
                    try await connection.onQueue { conn in
                        _ = try conn.query("INSERT INTO \(table) VALUES ($1)", [1])
                        try conn.commit()
                    }
                }
                #expect(try await connection(client).handOffs - before.handOffs == 1, "BEGIN, the insert and COMMIT in one hand-off")
                #expect(try await ids(client, table) == [1])
                try await expectReusable(client, pid: before.pid)
                // COMMIT answered with ROLLBACK is reported here too.
                let error = try await #require(throws: PostgresError.self) {
                    try await client.transaction { connection in
                        try await connection.onQueue { conn in
                            _ = try conn.query("INSERT INTO \(table) VALUES ($1)", [2])
                            _ = try? conn.query("INSERT INTO \(table) VALUES ($1)", [1])
                            try conn.commit()
                        }
                    }
                }
                #expect(error.message.contains("rolled back"), "\(error)")
                #expect(try await ids(client, table) == [1])
                try await expectReusable(client, pid: before.pid)
                // Outside a transaction there is nothing to commit.
                try await client.onQueue { try $0.commit() }
                try await expectReusable(client, pid: before.pid)
            }
        }
    }

    @Test func anAsyncTransactionsBeginRidesWithItsFirstStatement() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int PRIMARY KEY") { table in
                let pid = try await connection(client).pid
                let insert = "INSERT INTO \(table) VALUES ($1)"
                /// Hand-offs and round trips of `operation` on the pool's only connection.
                func cost(_ operation: () async throws -> Void) async throws -> (handOffs: UInt64, roundTrips: UInt64) {
                    let before = try await client.withConnection { ($0.handOffs, $0.roundTrips) }
                    try await operation()
                    let after = try await client.withConnection { ($0.handOffs, $0.roundTrips) }
                    return (after.0 - before.0, after.1 - before.1)
                }
                try await client.transaction { _ = try await $0.query(insert, [1]) }  // prepares the insert
                let plain = try await cost { try await client.transaction { _ = try await $0.query(insert, [2]) } }
                #expect(plain.handOffs == 2 && plain.roundTrips == 2, "BEGIN + insert; COMMIT (was 3 round trips): \(plain)")
                let last = try await cost {
                    try await client.transaction { connection in
                        _ = try await connection.onQueue { try $0.queryThenCommit(insert, [3]) }
                    }
                }
                #expect(last.handOffs == 1 && last.roundTrips == 1, "BEGIN, insert and COMMIT in one pipeline: \(last)")
                #expect(try await ids(client, table) == [1, 2, 3])
                // A first statement that cannot even be prepared began nothing: no ROLLBACK follows.
                var error: PostgresError?
                let unprepared = try await cost {
                    error = await #expect(throws: PostgresError.self) {
                        try await client.transaction { _ = try await $0.query("SELEC $1::int", [1]) }
                    }
                }
                #expect(error?.sqlState == "42601", "\(String(describing: error))")  // syntax_error
                #expect(unprepared.handOffs == 1, "no ROLLBACK hop: \(unprepared)")
                try await expectReusable(client, pid: pid)
                // A first statement that fails after BEGIN: rolled back as before.
                let failed = try await #require(throws: PostgresError.self) {
                    try await client.transaction { _ = try await $0.query(insert, [1]) }
                }
                #expect(failed.sqlState == "23505", "\(failed)")
                #expect(try await ids(client, table) == [1, 2, 3])
                try await expectReusable(client, pid: pid)
            }
        }
    }

    // BEGIN and the first statement go in one network round trip (libpq pipeline mode): the same
    // outcomes when that first statement fails, is cancelled, or loses the connection.

    @Test func aFirstStatementThatFailsRollsBackAndTheConnectionServesOn() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int PRIMARY KEY") { table in
                _ = try await client.query("INSERT INTO \(table) VALUES ($1)", [1])
                let pid = try await connection(client).pid
                for _ in 0..<2 {  // prepared the first time, cached the second
                    let error = try await #require(throws: PostgresError.self) {
                        try await client.transactionOnQueue { conn in _ = try conn.query("INSERT INTO \(table) VALUES ($1)", [1]) }
                    }
                    #expect(error.sqlState == "23505", "\(error)")
                    try await expectReusable(client, pid: pid)
                }
                let error = try await #require(throws: PostgresError.self) {
                    try await client.transactionOnQueue { conn in _ = try conn.query("SELECT 1/$1::int", [0]) }
                }
                #expect(error.sqlState == "22012", "\(error)")  // division_by_zero
                try await expectReusable(client, pid: pid)
                #expect(try await client.transactionOnQueue { try $0.query("SELECT count(*) FROM \(table)").rows[0].decode(0, as: Int.self) } == 1)
            }
        }
    }

    @Test func aCancelledFirstStatementIsCancelledOnTheServer() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            let pid = try await connection(client).pid
            let task = Task { try await client.transactionOnQueue { conn in _ = try conn.query("SELECT pg_sleep(30)") } }
            try await TestDatabase.waitUntilSleeping(backend: pid)
            task.cancel()
            let error = try await #require(throws: PostgresError.self) {
                try await TestKafka.within(.seconds(20), "the cancelled transaction") { try await task.value }
            }
            #expect(error.sqlState == "57014", "\(error)")
            try await expectReusable(client, pid: pid)
        }
    }

    @Test func aConnectionLostAtTheFirstStatementIsBrokenAndReplaced() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            let pid = try await connection(client).pid
            let error = try await #require(throws: PostgresError.self) {
                try await client.transactionOnQueue { conn in _ = try conn.query("SELECT pg_terminate_backend(pg_backend_pid())") }
            }
            #expect(error.isRetriable, "\(error)")
            let next = try await connection(client)
            #expect(next.pid != pid)
            #expect(!next.broken)
            #expect(try await client.transactionOnQueue { try $0.query("SELECT 5").rows[0].decode(0, as: Int.self) } == 5)
        }
    }

    @Test func withoutPreparedStatementsBeginGoesOnItsOwn() async throws {
        var configuration = TestDatabase.configuration(poolSize: 1)
        configuration.preparedStatements = false
        let client = PostgresClient(configuration: configuration, logger: TestDatabase.logger)
        let outcome = await TestKafka.result {
            try await beginsAndRollsBack(client)
        }
        await client.close()
        try outcome.get()
    }

    func beginsAndRollsBack(_ client: PostgresClient) async throws {
        try await TestDatabase.withTemporaryTable(client, columns: "id int") { table in
            let pid = try await connection(client).pid
            await #expect(throws: Boom.self) {
                try await client.transactionOnQueue { conn in
                    _ = try conn.query("INSERT INTO \(table) VALUES ($1)", [1])
                    throw Boom()
                }
            }
            try await client.transactionOnQueue { conn in _ = try conn.query("INSERT INTO \(table) VALUES ($1)", [2]) }
            #expect(try await ids(client, table) == [2])
            try await expectReusable(client, pid: pid)
        }
    }
}

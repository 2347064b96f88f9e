import Foundation
import Postgres
import TestSupport
import Testing

/// `PostgresSyncConnection.queryThenCommit`: a transaction's last statement and its COMMIT in one
/// pipeline (one network round trip), with the outcomes of a statement and a COMMIT of their own.
/// One test at a time: the target's suites run in parallel and share the server's connection slots.
@Suite(.serialized, .timeLimit(.minutes(2))) struct QueryThenCommitTests {
    /// The pool's only connection: its backend, whether it is healthy, and its counters so far
    /// (reading them is no hand-off).
    func connection(_ client: PostgresClient) async throws -> (pid: Int32, broken: Bool, handOffs: UInt64, roundTrips: UInt64) {
        try await client.withConnection { ($0.backendPID, $0.isBroken, $0.handOffs, $0.roundTrips) }
    }

    func ids(_ client: PostgresClient, _ table: String) async throws -> [Int] {
        try await client.query("SELECT id FROM \(table) ORDER BY id").rows.map { try $0.decode(0, as: Int.self) }
    }

    /// Hand-offs and round trips `operation` cost on the pool's only connection.
    func cost(_ client: PostgresClient, _ operation: () async throws -> Void) async throws -> (handOffs: UInt64, roundTrips: UInt64) {
        let before = try await connection(client)
        try await operation()
        let after = try await connection(client)
        return (after.handOffs - before.handOffs, after.roundTrips - before.roundTrips)
    }

    /// The same backend serves again, outside any transaction, out of pipeline mode, with no
    /// result of before left to read.
    func expectReusable(_ client: PostgresClient, pid: Int32, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let now = try await connection(client)
        #expect(now.pid == pid, "the same backend", sourceLocation: sourceLocation)
        #expect(!now.broken, sourceLocation: sourceLocation)
        let state = try await TestDatabase.withClient(poolSize: 1) { observer in
            try await observer.query("SELECT state FROM pg_stat_activity WHERE pid = $1", [pid]).rows.first?.decode(0, as: String.self)
        }
        #expect(state == "idle", "no transaction left open", sourceLocation: sourceLocation)
        let echoed = try await client.transactionOnQueue { conn in
            [try conn.query("SELECT $1::int", [41]).rows[0].decode(0, as: Int.self),
             try conn.queryThenCommit("SELECT $1::int", [42]).rows[0].decode(0, as: Int.self)]
        }
        #expect(echoed == [41, 42], "each statement gets its own result", sourceLocation: sourceLocation)
    }

    @Test func commitsWithTheLastStatementInOneRoundTrip() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int PRIMARY KEY") { table in
                let pid = try await connection(client).pid
                for round in 0..<2 {  // prepared in the first round, cached in the second
                    var returned: [Int] = []
                    let spent = try await cost(client) {
                        returned = try await client.transactionOnQueue { conn in
                            _ = try conn.query("INSERT INTO \(table) VALUES ($1)", [round * 10 + 1])
                            return try conn.queryThenCommit("INSERT INTO \(table) VALUES ($1) RETURNING id", [round * 10 + 2])
                                .rows.map { try $0.decode(0, as: Int.self) }
                        }
                    }
                    #expect(returned == [round * 10 + 2], "the statement's own result")
                    #expect(spent.handOffs == 1)
                    if round == 1 { #expect(spent.roundTrips == 2, "BEGIN + insert; insert + COMMIT (was 3 with COMMIT on its own)") }
                }
                #expect(try await ids(client, table) == [1, 2, 11, 12])
                // The transaction's only statement: BEGIN, it and COMMIT in one round trip.
                let only = try await cost(client) {
                    let id = try await client.transactionOnQueue { conn in
                        try conn.queryThenCommit("INSERT INTO \(table) VALUES ($1) RETURNING id", [3]).rows[0].decode(0, as: Int.self)
                    }
                    #expect(id == 3)
                }
                #expect(only.handOffs == 1 && only.roundTrips == 1, "\(only)")
                #expect(try await ids(client, table) == [1, 2, 3, 11, 12])
                try await expectReusable(client, pid: pid)
                // Outside a transaction it is a plain statement.
                let plain = try await cost(client) {
                    _ = try await client.onQueue { try $0.queryThenCommit("INSERT INTO \(table) VALUES ($1)", [4]) }
                }
                #expect(plain.handOffs == 1 && plain.roundTrips == 1, "\(plain)")
                #expect(try await ids(client, table) == [1, 2, 3, 4, 11, 12])
                try await expectReusable(client, pid: pid)
            }
        }
    }

    @Test func insideAnAsyncTransactionItEndsItAndNoCommitFollows() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int PRIMARY KEY") { table in
                let pid = try await connection(client).pid
                _ = try await client.query("INSERT INTO \(table) VALUES ($1)", [7])
                let spent = try await cost(client) {
                    try await client.transaction { connection in
                        _ = try await connection.onQueue { try $0.queryThenCommit("INSERT INTO \(table) VALUES ($1)", [1]) }
                    }
                }
                #expect(spent.handOffs == 1, "no COMMIT of its own afterwards")
                #expect(try await ids(client, table) == [1, 7])
                // Its statement fails: rolled back by the async transaction, the statement's error.
                let error = try await #require(throws: PostgresError.self) {
                    try await client.transaction { connection in
                        _ = try await connection.onQueue { conn in
                            _ = try conn.query("INSERT INTO \(table) VALUES ($1)", [2])
                            return try conn.queryThenCommit("INSERT INTO \(table) VALUES ($1)", [7])
                        }
                    }
                }
                #expect(error.sqlState == "23505", "\(error)")
                #expect(try await ids(client, table) == [1, 7])
                try await expectReusable(client, pid: pid)
            }
        }
    }

    /// The error a failing statement throws, with `query` or with `queryThenCommit` as the
    /// transaction's last (or only) statement.
    func statementError(
        _ client: PostgresClient, _ table: String, last: Bool, only: Bool, _ sql: String, _ params: [any PostgresBindable]
    ) async throws -> PostgresError {
        try await #require(throws: PostgresError.self) {
            try await client.transactionOnQueue { conn in
                if !only { _ = try conn.query("INSERT INTO \(table) VALUES ($1)", [100]) }
                _ = try last ? conn.queryThenCommit(sql, params) : conn.query(sql, params)
            }
        }
    }

    @Test func aFailingStatementCommitsNothingAndThrowsWhatQueryThrows() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int PRIMARY KEY") { table in
                _ = try await client.query("INSERT INTO \(table) VALUES ($1)", [1])
                let pid = try await connection(client).pid
                let failing: [(sql: String, params: [any PostgresBindable], state: String)] = [
                    ("INSERT INTO \(table) VALUES ($1)", [1], "23505"),  // unique_violation
                    ("SELECT 1/$1::int", [0], "22012"),  // division_by_zero
                ]
                for f in failing {
                    for only in [false, true] {
                        for _ in 0..<2 {  // prepared the first time, cached the second
                            let expected = try await statementError(client, table, last: false, only: only, f.sql, f.params)
                            let error = try await statementError(client, table, last: true, only: only, f.sql, f.params)
                            #expect(error.sqlState == f.state, "\(error)")
                            #expect(error.kind == expected.kind)
                            #expect(error.sqlState == expected.sqlState)
                            #expect(error.message == expected.message)
                            #expect(error.constraint == expected.constraint)
                            #expect(error.isRetriable == expected.isRetriable)
                            #expect(!error.isRetriable)
                            #expect(try await ids(client, table) == [1], "nothing of the transaction committed")
                            try await expectReusable(client, pid: pid)
                        }
                    }
                }
            }
        }
    }

    @Test func aRetriableStatementErrorStaysRetriable() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int PRIMARY KEY") { table in
                let function = TestDatabase.uniqueName("test_fail")
                try await client.withConnection { connection in
                    try await connection.execute(
                        "CREATE FUNCTION \(function)(code text) RETURNS int LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'forced %', code USING ERRCODE = code; END $$"
                    )
                }
                let pid = try await connection(client).pid
                let outcome = await TestKafka.result {
                    for code in ["40001", "40P01"] {  // serialization failure, deadlock
                        let error = try await statementError(client, table, last: true, only: false, "SELECT \(function)($1)", [code])
                        #expect(error.sqlState == code, "\(error)")
                        #expect(error.isRetriable, "\(error)")
                        #expect(try await ids(client, table) == [])
                        try await expectReusable(client, pid: pid)
                    }
                }
                try await client.withConnection { try await $0.execute("DROP FUNCTION \(function)(text)") }
                try outcome.get()
            }
        }
    }

    /// The error a COMMIT throws, on its own (`last: false`) or riding with the last statement.
    func commitError(_ client: PostgresClient, last: Bool, _ statements: [(String, [any PostgresBindable])]) async throws -> PostgresError {
        try await #require(throws: PostgresError.self) {
            try await client.transactionOnQueue { conn in
                for (i, statement) in statements.enumerated() {
                    _ = try last && i == statements.count - 1 ? conn.queryThenCommit(statement.0, statement.1) : conn.query(statement.0, statement.1)
                }
            }
        }
    }

    @Test func aDeferredUniqueViolationFailsTheCommitAndNothingIsCommitted() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int, UNIQUE (id) DEFERRABLE INITIALLY DEFERRED") { table in
                _ = try await client.query("INSERT INTO \(table) VALUES ($1)", [1])
                let pid = try await connection(client).pid
                for only in [false, true] {
                    let statements: [(String, [any PostgresBindable])] =
                        (only ? [] : [("INSERT INTO \(table) VALUES ($1)", [5])]) + [("INSERT INTO \(table) VALUES ($1)", [1])]
                    let expected = try await commitError(client, last: false, statements)
                    let error = try await commitError(client, last: true, statements)
                    #expect(error.sqlState == "23505", "\(error)")
                    #expect(error.kind == .query)
                    #expect(error.kind == expected.kind && error.sqlState == expected.sqlState && error.message == expected.message)
                    #expect(error.constraint == expected.constraint)
                    #expect(!error.isRetriable)
                    #expect(try await ids(client, table) == [1], "nothing of the transaction committed")
                    try await expectReusable(client, pid: pid)
                }
            }
        }
    }

    @Test func aDeferredForeignKeyViolationFailsTheCommitAndNothingIsCommitted() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int PRIMARY KEY") { parent in
                try await TestDatabase.withTemporaryTable(
                    client, columns: "id int PRIMARY KEY, parent int REFERENCES \(parent) (id) DEFERRABLE INITIALLY DEFERRED"
                ) { child in
                    let pid = try await connection(client).pid
                    let error = try await commitError(
                        client, last: true,
                        [("INSERT INTO \(parent) VALUES ($1)", [1]), ("INSERT INTO \(child) VALUES ($1, $2)", [1, 99])])
                    #expect(error.sqlState == "23503", "\(error)")  // foreign_key_violation
                    #expect(error.kind == .query)
                    #expect(!error.isRetriable)
                    #expect(try await ids(client, parent) == [])
                    #expect(try await ids(client, child) == [])
                    try await expectReusable(client, pid: pid)
                    // The same statements with the parent row there commit.
                    try await client.transactionOnQueue { conn in
                        _ = try conn.query("INSERT INTO \(parent) VALUES ($1)", [99])
                        _ = try conn.queryThenCommit("INSERT INTO \(child) VALUES ($1, $2)", [1, 99])
                    }
                    #expect(try await ids(client, child) == [1])
                }
            }
        }
    }

    /// A deferred constraint trigger on a fresh table whose function runs `action` at COMMIT.
    func withCommitTrigger(_ client: PostgresClient, _ action: String, _ body: (String) async throws -> Void) async throws {
        try await TestDatabase.withTemporaryTable(client, columns: "id int") { table in
            let function = TestDatabase.uniqueName("test_at_commit")
            try await client.withConnection { connection in
                try await connection.execute(
                    """
                    CREATE FUNCTION \(function)() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \(action); RETURN NULL; END $$;
                    CREATE CONSTRAINT TRIGGER \(function) AFTER INSERT ON \(table) DEFERRABLE INITIALLY DEFERRED
                        FOR EACH ROW EXECUTE FUNCTION \(function)();
                    """)
            }
            let outcome = await TestKafka.result { try await body(table) }
            try await client.withConnection { try await $0.execute("DROP TABLE \(table); DROP FUNCTION \(function)()") }
            try outcome.get()
        }
    }

    @Test func aSerializationFailureAtCommitIsThrownAndRetriable() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            try await withCommitTrigger(client, "RAISE EXCEPTION 'forced at commit' USING ERRCODE = '40001'") { table in
                let pid = try await connection(client).pid
                let error = try await commitError(client, last: true, [("INSERT INTO \(table) VALUES ($1)", [1])])
                #expect(error.sqlState == "40001", "\(error)")
                #expect(error.isRetriable, "a caller retries it, as a COMMIT of its own that failed so")
                #expect(try await ids(client, table) == [])
                try await expectReusable(client, pid: pid)
            }
        }
    }

    @Test func aConnectionLostAtCommitIsRetriableAndTheConnectionReplaced() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            try await withCommitTrigger(client, "PERFORM pg_terminate_backend(pg_backend_pid())") { table in
                for last in [false, true] {  // COMMIT on its own, then riding with the insert: the same
                    let pid = try await connection(client).pid
                    let error = try await commitError(client, last: last, [("INSERT INTO \(table) VALUES ($1)", [1])])
                    #expect(error.isRetriable, "\(error)")
                    let next = try await connection(client)
                    #expect(next.pid != pid, "the lost connection was dropped, a new one opened")
                    #expect(!next.broken)
                }
                #expect(try await ids(client, table) == [])
            }
        }
    }

    @Test func aConnectionLostAtTheStatementIsRetriableAndTheConnectionReplaced() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            for only in [false, true] {
                let pid = try await connection(client).pid
                let error = try await #require(throws: PostgresError.self) {
                    try await client.transactionOnQueue { conn in
                        if !only { _ = try conn.query("SELECT 1") }
                        _ = try conn.queryThenCommit("SELECT pg_terminate_backend(pg_backend_pid())")
                    }
                }
                #expect(error.isRetriable, "\(error)")
                let next = try await connection(client)
                #expect(next.pid != pid)
                #expect(!next.broken)
                try await expectReusable(client, pid: next.pid)
            }
        }
    }

    @Test func aCancelledStatementCommitsNothing() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int") { table in
                let pid = try await connection(client).pid
                let task = Task {
                    try await client.transactionOnQueue { conn in
                        _ = try conn.query("INSERT INTO \(table) VALUES ($1)", [1])
                        _ = try conn.queryThenCommit("SELECT pg_sleep(30)")
                    }
                }
                try await TestDatabase.waitUntilSleeping(backend: pid)
                task.cancel()
                let error = try await #require(throws: PostgresError.self) {
                    try await TestKafka.within(.seconds(20), "the cancelled transaction") { try await task.value }
                }
                #expect(error.sqlState == "57014", "\(error)")  // query_canceled
                #expect(try await ids(client, table) == [])
                try await expectReusable(client, pid: pid)
            }
        }
    }

    @Test func withoutPreparedStatementsTheOutcomesAreTheSame() async throws {
        var configuration = TestDatabase.configuration(poolSize: 1)
        configuration.preparedStatements = false
        let client = PostgresClient(configuration: configuration, logger: TestDatabase.logger)
        let outcome = await TestKafka.result {
            try await TestDatabase.withTemporaryTable(client, columns: "id int, UNIQUE (id) DEFERRABLE INITIALLY DEFERRED") { table in
                let pid = try await connection(client).pid
                let id = try await client.transactionOnQueue { conn in
                    try conn.queryThenCommit("INSERT INTO \(table) VALUES ($1) RETURNING id", [1]).rows[0].decode(0, as: Int.self)
                }
                #expect(id == 1)
                let statement = try await statementError(client, table, last: true, only: false, "SELECT 1/$1::int", [0])
                #expect(statement.sqlState == "22012", "\(statement)")
                let commit = try await commitError(client, last: true, [("INSERT INTO \(table) VALUES ($1)", [1])])
                #expect(commit.sqlState == "23505", "\(commit)")
                #expect(try await ids(client, table) == [1])
                try await expectReusable(client, pid: pid)
            }
        }
        await client.close()
        try outcome.get()
    }
}

import Foundation
import TestSupport
import Testing

@testable import Postgres

/// The per-connection prepared-statement cache behind `query`.
@Suite(.timeLimit(.minutes(2))) struct StatementCacheTests {
    /// One connection (closed afterwards, also when `body` throws).
    private func withConnection<T: Sendable>(
        capacity: Int = 256, prepared: Bool = true, _ body: (PostgresConnection) async throws -> T
    ) async throws -> T {
        var config = TestDatabase.configuration()
        config.preparedStatements = prepared
        config.statementCacheCapacity = capacity
        let connection = try await PostgresConnection.connect(config, logger: TestDatabase.logger)
        do {
            let value = try await body(connection)
            await connection.close()
            return value
        } catch {
            await connection.close()
            throw error
        }
    }

    /// The session's prepared statements, read with the simple protocol so the look-up prepares nothing.
    private func prepared(_ connection: PostgresConnection) async throws -> [String] {
        try await connection.executeReturningResult("SELECT statement FROM pg_prepared_statements ORDER BY name")
            .rows.map { try $0.decode(0, as: String.self) }
    }

    @Test func aRepeatedStatementIsPreparedOnceAndReturnsRightResults() async throws {
        try await withConnection { connection in
            let sql = "SELECT $1::int + 1 AS n, $2::text AS s, $3::text IS NULL AS null"
            for i in 0..<500 {
                let row = try await connection.query(sql, [i, "v\(i)", i % 2 == 0 ? nil : String?("x")]).rows[0]
                #expect(try row.decode("n", as: Int.self) == i + 1)
                #expect(try row.decode("s", as: String.self) == "v\(i)")
                #expect(try row.decode("null", as: Bool.self) == (i % 2 == 0))
            }
            #expect(try await prepared(connection) == [sql])
        }
    }

    @Test func parameterTypesArePartOfTheKey() async throws {
        try await withConnection { connection in
            try await connection.execute("CREATE TEMP TABLE blobs (id int PRIMARY KEY, b bytea)")
            let insert = "INSERT INTO blobs VALUES ($1, $2)"
            // bytea binds as OID 17, NULL as unknown: two statements, both with the right values.
            for id in 0..<6 {
                let value: [UInt8]? = id % 2 == 0 ? [0, UInt8(id), 255] : nil
                _ = try await connection.query(insert, [id, value])
            }
            let rows = try await connection.query("SELECT b FROM blobs ORDER BY id").rows
            let values = try rows.map { try $0.decode(0, as: [UInt8]?.self) }
            #expect(values == [[0, 0, 255], nil, [0, 2, 255], nil, [0, 4, 255], nil])
            #expect(try await prepared(connection).filter { $0 == insert }.count == 2)
        }
    }

    @Test func aStatementThatFailsToPrepareIsNotCached() async throws {
        try await withConnection { connection in
            for _ in 0..<2 {
                let error = try await #require(throws: PostgresError.self) {
                    _ = try await connection.query("SELEC $1::int", [1])
                }
                #expect(error.kind == .query)
                #expect(error.sqlState == "42601")
            }
            let table = TestDatabase.uniqueName("later")
            let select = "SELECT count(*) FROM \(table) WHERE id = $1"
            let missing = try await #require(throws: PostgresError.self) { _ = try await connection.query(select, [1]) }
            #expect(missing.sqlState == "42P01")
            #expect(try await prepared(connection).isEmpty)
            try await connection.execute("CREATE TEMP TABLE \(table) (id int)")
            // In a transaction, where a cached but unprepared name could not be recovered from.
            let count = try await connection.withTransaction { try await $0.query(select, [1]) }
            #expect(try count.rows[0].decode(0, as: Int.self) == 0)
            #expect(try await prepared(connection) == [select])
        }
    }

    @Test func changingATablesColumnsUnderACachedStatementIsTransparent() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int PRIMARY KEY, v text") { table in
                let select = "SELECT * FROM \(table) WHERE id = $1"
                _ = try await client.query("INSERT INTO \(table) VALUES ($1, $2)", [1, "a"])
                #expect(try await client.query(select, [1]).rows[0].columns == ["id", "v"])

                // Same connection: PostgreSQL answers 0A000 "cached plan must not change result type".
                try await client.withConnection {
                    try await $0.execute("ALTER TABLE \(table) ADD COLUMN w int DEFAULT 7")
                }
                let widened = try await client.query(select, [1]).rows[0]
                #expect(widened.columns == ["id", "v", "w"])
                #expect(try widened.decode("w", as: Int.self) == 7)

                // Another connection's DDL.
                try await TestDatabase.withClient(poolSize: 1) { other in
                    try await other.withConnection { try await $0.execute("ALTER TABLE \(table) DROP COLUMN v") }
                }
                #expect(try await client.query(select, [1]).rows[0].columns == ["id", "w"])

                // Inside a transaction the statement cannot be retried: the error is retriable, and the
                // retried transaction sees the new columns.
                try await client.withConnection { try await $0.execute("ALTER TABLE \(table) ADD COLUMN x int") }
                let stale = try await #require(throws: PostgresError.self) {
                    try await client.transaction { connection in
                        _ = try await connection.query(select, [1])
                    }
                }
                #expect(stale.sqlState == "0A000")
                #expect(stale.isRetriable)
                let columns = try await client.transaction { connection in
                    try await connection.query(select, [1]).rows[0].columns
                }
                #expect(columns == ["id", "w", "x"])
                let statements = try await client.withConnection { try await prepared($0) }
                #expect(statements.filter { $0 == select }.count == 1)
            }
        }
    }

    @Test func statementsDeallocatedBehindTheCachesBackArePreparedAgain() async throws {
        try await withConnection { connection in
            let sql = "SELECT $1::int * 2"
            #expect(try await connection.query(sql, [2]).rows[0].decode(0, as: Int.self) == 4)
            try await connection.execute("DEALLOCATE ALL")
            #expect(try await connection.query(sql, [3]).rows[0].decode(0, as: Int.self) == 6)
            #expect(try await prepared(connection) == [sql])
        }
    }

    @Test func statementsStillWorkAfterAFailedTransaction() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int PRIMARY KEY") { table in
                let insert = "INSERT INTO \(table) VALUES ($1)"
                let count = "SELECT count(*) FROM \(table) WHERE id >= $1"
                let late = "SELECT $1::int + 100"
                let error = try await #require(throws: PostgresError.self) {
                    try await client.transaction { connection in
                        _ = try await connection.query(insert, [1])  // prepared inside the transaction
                        _ = try await connection.query(count, [0])
                        do {
                            _ = try await connection.query(insert, [1])  // 23505 aborts the transaction
                        } catch {
                            // First prepared in the aborted transaction: fails (25P02), so is not cached.
                            let aborted = await Result { try await connection.query(late, [1]) }
                            #expect((aborted.error as? PostgresError)?.sqlState == "25P02")
                            throw error
                        }
                    }
                }
                #expect(error.sqlState == "23505")
                // Prepared statements outlive the rollback; the rolled-back row is gone.
                _ = try await client.query(insert, [2])
                #expect(try await client.query(count, [0]).rows[0].decode(0, as: Int.self) == 1)
                #expect(try await client.query(late, [1]).rows[0].decode(0, as: Int.self) == 101)
                let statements = try await client.withConnection { try await prepared($0) }
                #expect(Set(statements) == [insert, count, late])
            }
        }
    }

    @Test func theCacheIsBoundedAndEvictsTheLeastRecentlyUsed() async throws {
        try await withConnection(capacity: 3) { connection in
            func run(_ k: Int) async throws {
                let row = try await connection.query("SELECT $1::int + \(k)", [1]).rows[0]
                #expect(try row.decode(0, as: Int.self) == k + 1)
            }
            func cached() async throws -> Set<String> {
                Set(try await prepared(connection).map { String($0.dropFirst("SELECT $1::int + ".count)) })
            }
            for k in [1, 2, 3, 1, 4] { try await run(k) }  // 4 evicts 2, the least recently used
            #expect(try await cached() == ["1", "3", "4"])
            try await run(2)  // prepared again, evicting 3
            #expect(try await cached() == ["1", "2", "4"])
        }
        // The default bound.
        try await withConnection { connection in
            for k in 0..<300 {
                let value = try await connection.query("SELECT $1::int + \(k)", [1]).rows[0].decode(0, as: Int.self)
                #expect(value == k + 1)
            }
            let statements = try await prepared(connection)
            #expect(statements.count == 256)
        }
    }

    @Test func evictionInsideATransactionWaitsForItsEnd() async throws {
        try await withConnection(capacity: 2) { connection in
            try await connection.withTransaction { connection in
                for k in 0..<5 {
                    let value = try await connection.query("SELECT $1::int + \(k)", [1]).rows[0].decode(0, as: Int.self)
                    #expect(value == k + 1)
                }
            }
            #expect(try await prepared(connection).count == 2)
        }
    }

    @Test func optingOutPreparesNothing() async throws {
        try await withConnection(prepared: false) { connection in
            for i in 0..<3 {
                let value = try await connection.query("SELECT $1::int", [i]).rows[0].decode(0, as: Int.self)
                #expect(value == i)
            }
            let statements = try await prepared(connection)
            #expect(statements.isEmpty)
        }
        #expect(PostgresConfiguration(url: "postgresql://x").preparedStatements)
    }

    @Test func cacheBookkeeping() {
        var cache = StatementCache(capacity: 2)
        let a = StatementCache.Key(sql: "a", types: [])
        let b = StatementCache.Key(sql: "b", types: [])
        let aBytea = StatementCache.Key(sql: "a", types: [17])
        #expect(cache.name(for: a) == nil)
        let nameA = cache.makeName()
        cache.insert(a, name: nameA)
        let nameB = cache.makeName()
        cache.insert(b, name: nameB)
        #expect(nameA != nameB)
        #expect(cache.isFull)
        #expect(cache.name(for: aBytea) == nil)
        #expect(cache.name(for: a) == nameA)  // now b is the least recently used
        #expect(cache.evictLeastRecentlyUsed() == nameB)
        #expect(cache.name(for: b) == nil)
        #expect(cache.remove(a) == nameA)
        #expect(cache.count == 0)
        #expect(cache.evictLeastRecentlyUsed() == nil)
    }
}

extension Result where Failure == any Error {
    fileprivate init(_ body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }

    fileprivate var error: (any Error)? {
        if case .failure(let error) = self { error } else { nil }
    }
}

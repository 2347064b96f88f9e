import Foundation
import Postgres
import TestSupport
import Testing

@Suite(.timeLimit(.minutes(2))) struct MigrationTests {
    /// Migrations on tables named after `prefix`, so parallel tests never share schema objects.
    private func migrations(_ prefix: String) -> [Migration] {
        [
            Migration(version: 1, name: "create", sql: "CREATE TABLE \(prefix)_items (id bigint PRIMARY KEY)"),
            Migration(
                version: 2, name: "add column",
                sql: "ALTER TABLE \(prefix)_items ADD COLUMN label text; INSERT INTO \(prefix)_items VALUES (1, 'one');"
            ),
            Migration(
                version: 10, name: "log",
                sql: "CREATE TABLE \(prefix)_log (version int); INSERT INTO \(prefix)_log VALUES (10);"),
        ]
    }

    private func dropAll(_ client: PostgresClient, prefix: String) async throws {
        try await client.withConnection { connection in
            try await connection.execute(
                "DROP TABLE IF EXISTS \(prefix)_items, \(prefix)_log, \(prefix)_extra, \(prefix)_broken, "
                    + "\(prefix)_migrations"
            )
        }
    }

    @Test func appliesInOrderOnceAndThenNothing() async throws {
        let prefix = TestDatabase.uniqueName("mig")
        try await TestDatabase.withClient { client in
            let runner = MigrationRunner(client: client, logger: TestDatabase.logger, table: "\(prefix)_migrations")
            do {
                #expect(try await runner.migrate(migrations(prefix)) == [1, 2, 10])
                #expect(try await runner.migrate(migrations(prefix)) == [])
                let more =
                    migrations(prefix) + [
                        Migration(version: 11, name: "extra", sql: "CREATE TABLE \(prefix)_extra (x int)")
                    ]
                #expect(try await runner.migrate(more) == [11])

                let recorded = try await client.query("SELECT version, name FROM \(prefix)_migrations ORDER BY version")
                    .rows
                #expect(try recorded.map { try $0.decode(0, as: Int.self) } == [1, 2, 10, 11])
                #expect(
                    try recorded.map { try $0.decode(1, as: String.self) } == ["create", "add column", "log", "extra"])
                let item = try await client.query("SELECT label FROM \(prefix)_items WHERE id = $1", [1])
                #expect(try item.rows[0].decode(0, as: String.self) == "one")
            } catch {
                try await dropAll(client, prefix: prefix)
                throw error
            }
            try await dropAll(client, prefix: prefix)
        }
    }

    @Test func concurrentRunnersApplyEachMigrationOnce() async throws {
        let prefix = TestDatabase.uniqueName("mig")
        let list = migrations(prefix)
        let applied = try await withThrowingTaskGroup(of: [Int].self) { group in
            for _ in 0..<4 {
                group.addTask {
                    try await TestDatabase.withClient(poolSize: 1) { client in
                        try await MigrationRunner(
                            client: client, logger: TestDatabase.logger, table: "\(prefix)_migrations"
                        )
                        .migrate(list)
                    }
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        try await TestDatabase.withClient { client in
            do {
                #expect(applied.flatMap { $0 }.sorted() == [1, 2, 10])
                let log = try await client.query("SELECT count(*) FROM \(prefix)_log")
                #expect(try log.rows[0].decode(0, as: Int.self) == 1)
                let items = try await client.query("SELECT count(*) FROM \(prefix)_items")
                #expect(try items.rows[0].decode(0, as: Int.self) == 1)
            } catch {
                try await dropAll(client, prefix: prefix)
                throw error
            }
            try await dropAll(client, prefix: prefix)
        }
    }

    @Test func aFailingMigrationIsRolledBackAndStopsTheRun() async throws {
        let prefix = TestDatabase.uniqueName("mig")
        try await TestDatabase.withClient { client in
            let runner = MigrationRunner(client: client, logger: TestDatabase.logger, table: "\(prefix)_migrations")
            let list = [
                migrations(prefix)[0],
                Migration(
                    version: 2, name: "broken",
                    sql: "CREATE TABLE \(prefix)_broken (x int); INSERT INTO \(prefix)_nope VALUES (1);"),
                Migration(version: 3, name: "never", sql: "CREATE TABLE \(prefix)_extra (x int)"),
            ]
            do {
                let error = try await #require(throws: PostgresError.self) { _ = try await runner.migrate(list) }
                #expect(error.sqlState == "42P01")
                #expect(error.message.contains("migration 2 (broken)"))
                let recorded = try await client.query("SELECT version FROM \(prefix)_migrations ORDER BY version")
                #expect(try recorded.rows.map { try $0.decode(0, as: Int.self) } == [1])
                let leftovers = try await client.query(
                    "SELECT count(*) FROM pg_tables WHERE tablename = ANY($1::text[])",
                    ["{\(prefix)_broken,\(prefix)_extra}"])
                #expect(try leftovers.rows[0].decode(0, as: Int.self) == 0)
                // The advisory lock was released: a fixed list runs.
                var fixed = list
                fixed[1] = Migration(version: 2, name: "fixed", sql: "CREATE TABLE \(prefix)_broken (x int)")
                #expect(try await runner.migrate(fixed) == [2, 3])
            } catch {
                try await dropAll(client, prefix: prefix)
                throw error
            }
            try await dropAll(client, prefix: prefix)
        }
    }

    @Test func rejectsDuplicateOrUnorderedVersions() async throws {
        try await TestDatabase.withClient { client in
            let runner = MigrationRunner(
                client: client, logger: TestDatabase.logger, table: TestDatabase.uniqueName("mig"))
            for versions in [[1, 1], [1, 3, 2]] {
                let list = versions.map { Migration(version: $0, name: "m", sql: "SELECT 1") }
                let error = try await #require(throws: PostgresError.self) { _ = try await runner.migrate(list) }
                #expect(error.message.contains("invalid migration list"))
            }
        }
    }
}

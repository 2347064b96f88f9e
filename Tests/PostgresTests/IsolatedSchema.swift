import Postgres
import TestSupport

@testable import OrderCore

/// An `OrderStore` on a schema of its own (migrations applied there, dropped afterwards), so that
/// services running other tests in parallel never see these rows, nor these tests theirs (their
/// outbox relays take any row; their idempotency expiry deletes by age).
enum IsolatedSchema {
    static func withStore(_ prefix: String = "units", _ body: (OrderStore) async throws -> Void) async throws {
        try await withStore(prefix) { store, _ in try await body(store) }
    }

    /// The same, with the store's client for statements the store has no method for (set-up, checks).
    static func withStore(
        _ prefix: String = "units", poolSize: Int = 4, _ body: (OrderStore, PostgresClient) async throws -> Void
    ) async throws {
        let schema = TestDatabase.uniqueName(prefix)
        try await TestDatabase.withClient { db in try await db.withConnection { try await $0.execute("CREATE SCHEMA \(schema)") } }
        let url = TestDatabase.url + (TestDatabase.url.contains("?") ? "&" : "?") + "options=-csearch_path%3D\(schema)"
        let client = PostgresClient(configuration: TestDatabase.configuration(poolSize: poolSize, url: url), logger: TestDatabase.logger)
        let drop = { try await TestDatabase.withClient { db in try await db.withConnection { try await $0.execute("DROP SCHEMA \(schema) CASCADE") } } }
        do {
            _ = try await MigrationRunner(client: client, logger: TestDatabase.logger, table: OrderSchema.migrationsTable)
                .migrate(OrderSchema.migrations)
            try await body(OrderStore(db: client), client)
        } catch {
            await client.close()
            try? await drop()
            throw error
        }
        await client.close()
        try await drop()
    }
}

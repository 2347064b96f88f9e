import Foundation
import Logging
import Postgres

/// The test database. Tests that need it fail (never skip) when it is unreachable:
/// start it with `bash deploy/local/db.sh start`.
public enum TestDatabase {
    /// `DATABASE_URL`, or the local default created by deploy/local/db.sh.
    public static var url: String {
        let fromEnvironment = ProcessInfo.processInfo.environment["DATABASE_URL"] ?? ""
        return fromEnvironment.isEmpty ? "postgresql://orders:orders@127.0.0.1:5432/orders" : fromEnvironment
    }

    public static var logger: Logger {
        var logger = Logger(label: "test.postgres")
        logger.logLevel = .notice
        return logger
    }

    public static func configuration(poolSize: Int = 4, url: String = TestDatabase.url) -> PostgresConfiguration {
        PostgresConfiguration(
            url: url, poolSize: poolSize, connectTimeoutSeconds: 5, applicationName: "order-service-tests")
    }

    /// A pool on the test database; close it when done (or use `withClient`).
    public static func client(poolSize: Int = 4, logger: Logger = TestDatabase.logger) -> PostgresClient {
        PostgresClient(configuration: configuration(poolSize: poolSize), logger: logger)
    }

    /// Runs `body` with a fresh client and closes it afterwards, also when `body` throws.
    public static func withClient<T: Sendable>(
        poolSize: Int = 4, _ body: (PostgresClient) async throws -> T
    ) async throws -> T {
        let client = client(poolSize: poolSize)
        do {
            let value = try await body(client)
            await client.close()
            return value
        } catch {
            await client.close()
            throw error
        }
    }

    /// A lower-case identifier unlikely to collide with parallel tests, e.g. `test_items_3f9a0c1b2d4e`.
    public static func uniqueName(_ prefix: String = "test") -> String {
        "\(prefix)_\(String(UInt64.random(in: 0...UInt64.max) & 0xffff_ffff_ffff, radix: 16))"
    }

    /// Creates a table with a unique name (`CREATE TABLE <name> (<columns>)`), runs `body` with the name,
    /// and drops the table afterwards, also when `body` throws.
    public static func withTemporaryTable<T: Sendable>(
        _ client: PostgresClient, prefix: String = "test", columns: String, _ body: (String) async throws -> T
    ) async throws -> T {
        let table = uniqueName(prefix)
        try await client.withConnection { try await $0.execute("CREATE TABLE \(table) (\(columns))") }
        do {
            let value = try await body(table)
            try await client.withConnection { try await $0.execute("DROP TABLE IF EXISTS \(table)") }
            return value
        } catch {
            _ = try? await client.withConnection { try await $0.execute("DROP TABLE IF EXISTS \(table)") }
            throw error
        }
    }
}

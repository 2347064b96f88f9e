import Logging

public struct Migration: Sendable {
    public let version: Int
    public let name: String
    /// One or more statements, run with the simple-query protocol inside a transaction: no
    /// BEGIN/COMMIT of its own and nothing that refuses transactions (e.g. CREATE INDEX CONCURRENTLY).
    public let sql: String

    public init(version: Int, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
    }
}

/// Applies pending migrations. Safe to run from several instances at once: a session-level
/// `pg_advisory_lock` (keyed by the table name) serialises them, and each migration commits together
/// with its bookkeeping row.
public struct MigrationRunner: Sendable {
    private let client: PostgresClient
    private let logger: Logger
    private let table: String

    /// `table` may be `name` or `schema.name` (letters, digits, `_`); it is quoted in SQL.
    public init(client: PostgresClient, logger: Logger, table: String = "schema_migrations") {
        self.client = client
        self.logger = logger
        self.table = table
    }

    /// Applies, in ascending order, the migrations whose version is not recorded yet.
    /// Returns the versions applied by this call. `migrations` must have strictly ascending versions.
    public func migrate(_ migrations: [Migration]) async throws -> [Int] {
        try Self.validate(migrations)
        let table = try Self.quotedIdentifier(self.table)
        let lockKey = Self.lockKey(for: self.table)
        return try await client.withConnection { connection in
            _ = try await connection.query("SELECT pg_advisory_lock($1::bigint)", [lockKey])
            let applied: [Int]
            do {
                applied = try await applyPending(migrations, table: table, on: connection)
            } catch {
                await unlock(lockKey, on: connection)
                throw error
            }
            await unlock(lockKey, on: connection)
            return applied
        }
    }

    private func applyPending(_ migrations: [Migration], table: String, on connection: PostgresConnection)
        async throws -> [Int]
    {
        // Identifiers cannot be bound; `table` is validated and quoted, values below are bound.
        try await connection.execute(
            """
            CREATE TABLE IF NOT EXISTS \(table) (
                version BIGINT PRIMARY KEY,
                name TEXT NOT NULL,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )
            """)
        let done = Set(
            try await connection.query("SELECT version FROM \(table)").rows.map { try $0.decode(0, as: Int.self) })
        var applied: [Int] = []
        for migration in migrations where !done.contains(migration.version) {
            let metadata: Logger.Metadata = [
                "migration.version": "\(migration.version)", "migration.name": "\(migration.name)",
            ]
            logger.info("applying migration", metadata: metadata)
            do {
                try await connection.withTransaction { connection in
                    try await connection.execute(migration.sql)
                    _ = try await connection.query(
                        "INSERT INTO \(table) (version, name) VALUES ($1, $2)", [migration.version, migration.name])
                }
            } catch let error as PostgresError {
                throw PostgresError(
                    kind: error.kind, sqlState: error.sqlState,
                    message: "migration \(migration.version) (\(migration.name)) failed: \(error.message)",
                    detail: error.detail, constraint: error.constraint)
            }
            logger.info("applied migration", metadata: metadata)
            applied.append(migration.version)
        }
        if applied.isEmpty {
            logger.debug("database schema is up to date", metadata: ["migrations.table": "\(self.table)"])
        }
        return applied
    }

    /// A connection that may still hold the lock must not go back to the pool.
    private func unlock(_ key: Int64, on connection: PostgresConnection) async {
        do {
            _ = try await connection.queryUncancellable("SELECT pg_advisory_unlock($1::bigint)", [key])
        } catch {
            logger.warning(
                "could not release the migration lock; discarding the connection", metadata: ["error": "\(error)"])
            connection.markBroken()
        }
    }

    static func validate(_ migrations: [Migration]) throws {
        for (previous, next) in zip(migrations, migrations.dropFirst()) where next.version <= previous.version {
            let problem = next.version == previous.version ? "duplicate version" : "versions out of order"
            throw PostgresError(
                kind: .query,
                message: "invalid migration list: \(problem) (\(previous.version) then \(next.version)); "
                    + "versions must be unique and ascending")
        }
    }

    static func quotedIdentifier(_ name: String) throws -> String {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        let valid =
            (1...2).contains(parts.count)
            && parts.allSatisfy { part in
                guard let first = part.first, part.count <= 63, first == "_" || (first.isASCII && first.isLetter)
                else { return false }
                return part.allSatisfy { $0 == "_" || ($0.isASCII && ($0.isLetter || $0.isNumber)) }
            }
        guard valid else {
            throw PostgresError(
                kind: .query, message: "invalid migrations table name \"\(name)\": use letters, digits and _")
        }
        return parts.map { "\"\($0)\"" }.joined(separator: ".")
    }

    /// Stable across processes (unlike `Hasher`): 64-bit FNV-1a of a name-spaced table name.
    static func lockKey(for table: String) -> Int64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in "migrations:\(table)".utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01b3
        }
        return Int64(bitPattern: hash)
    }
}

import Foundation
import Logging
import CLibPQ
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

    /// Waits until backend `pid` is running `SELECT pg_sleep(30)`, seen by a connection of its own:
    /// a cancel sent after this has to go through the server.
    public static func waitUntilSleeping(backend pid: Int32) async throws {
        try await withClient(poolSize: 1) { observer in
            try await TestKafka.eventually("pg_sleep running on backend \(pid)", timeout: .seconds(20)) {
                let active = try await observer.query(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND query LIKE 'SELECT pg_sleep(30)%'",
                    [pid])
                return try active.rows[0].decode(0, as: Int.self) == 1
            }
        }
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

/// Where libpq would connect for a connection string, as libpq itself parses it.
public struct DatabaseEndpoint: Sendable, Equatable {
    /// The address connected to: `hostaddr` when given, else `host` (a name or an IP address).
    public var host: String
    public var port: Int
    /// The password in the string, else `PGPASSWORD`.
    public var password: String?
}

extension TestDatabase {
    /// The TCP endpoint of `conninfo` (a `postgresql://` URI or a keyword/value string), parsed by
    /// libpq (`PQconninfoParse`); `PGHOSTADDR`/`PGHOST`/`PGPORT` fill what the string leaves out.
    /// Throws for what a test cannot stand a TCP proxy in front of: a string libpq rejects,
    /// several hosts, a Unix socket (also libpq's default when no host is given at all).
    public static func endpoint(of conninfo: String) throws -> DatabaseEndpoint {
        let options = try parseConnectionString(conninfo)
        let env = ProcessInfo.processInfo.environment
        func value(_ keyword: String, _ variable: String) -> String? {
            if let v = options[keyword], !v.isEmpty { return v }
            if let v = env[variable], !v.isEmpty { return v }
            return nil
        }
        guard let host = value("hostaddr", "PGHOSTADDR") ?? value("host", "PGHOST") else {
            throw TestDatabaseError("no host in the connection string (\(redacted(conninfo))) nor PGHOST: libpq would use a Unix socket")
        }
        guard !host.contains(",") else { throw TestDatabaseError("several hosts in \(redacted(conninfo)): not supported here") }
        guard !host.hasPrefix("/"), !host.hasPrefix("@") else {
            throw TestDatabaseError("\(redacted(conninfo)) connects over a Unix socket (\(host)), not TCP")
        }
        let portText = value("port", "PGPORT") ?? "5432"
        guard let port = Int(portText), (1...65_535).contains(port) else {
            throw TestDatabaseError("unusable port '\(portText)' in \(redacted(conninfo))")
        }
        return DatabaseEndpoint(host: host, port: port, password: value("password", "PGPASSWORD"))
    }

    /// `conninfo` made to connect to `host`:`port` (an IP address) and otherwise unchanged:
    /// `hostaddr` and `port` are appended (later settings win in both syntaxes; `host` stays, so
    /// TLS verification and the password file still see the original name). Checked by parsing
    /// the result again: throws unless libpq would connect where asked.
    public static func connectionString(_ conninfo: String, connectingTo host: String, port: Int) throws -> String {
        let rewritten: String
        if conninfo.hasPrefix("postgresql://") || conninfo.hasPrefix("postgres://") {
            rewritten = conninfo + (conninfo.contains("?") ? "&" : "?") + "hostaddr=\(host)&port=\(port)"
        } else {
            rewritten = conninfo + " hostaddr=\(host) port=\(port)"
        }
        let check = try endpoint(of: rewritten)
        guard check.host == host, check.port == port else {
            throw TestDatabaseError("rewriting \(redacted(conninfo)) to \(host):\(port) gave \(check.host):\(check.port)")
        }
        return rewritten
    }

    /// Every keyword libpq finds in `conninfo`, with its value.
    public static func parseConnectionString(_ conninfo: String) throws -> [String: String] {
        var error: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(conninfo, &error) else {
            let message = error.map { String(cString: $0) } ?? "out of memory"
            if let error { PQfreemem(error) }
            throw TestDatabaseError("libpq cannot parse the connection string \(redacted(conninfo)): \(message)")
        }
        defer { PQconninfoFree(options) }
        var result: [String: String] = [:]
        var option = options
        while let keyword = option.pointee.keyword {
            if let val = option.pointee.val { result[String(cString: keyword)] = String(cString: val) }
            option += 1
        }
        return result
    }

    /// `conninfo` with its passwords replaced by `***` (as the services log it).
    public static func redacted(_ conninfo: String) -> String { PostgresConfiguration(url: conninfo).redactedURL }
}

public struct TestDatabaseError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

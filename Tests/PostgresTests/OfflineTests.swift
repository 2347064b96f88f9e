import Foundation
import Testing

@testable import Postgres

/// Pure conversions and classification; no server needed.
@Suite(.timeLimit(.minutes(2))) struct OfflineTests {
    @Test(arguments: [
        ("postgresql://orders:orders@127.0.0.1:5432/orders", "postgresql://orders:***@127.0.0.1:5432/orders"),
        ("postgres://u:p%40ss@db:5432/x?sslmode=require", "postgres://u:***@db:5432/x?sslmode=require"),
        ("postgresql://u@host/db", "postgresql://u@host/db"),
        (
            "postgresql://host/db?user=u&password=hunter2&sslmode=verify-full",
            "postgresql://host/db?user=u&password=***&sslmode=verify-full"
        ),
        ("postgresql://u:we@ird/pw@host/db", "postgresql://u:***@host/db"),
        ("host=db user=u password=hunter2 dbname=x", "host=db user=u password=*** dbname=x"),
        ("host=db password = 'a b\\' c' dbname=x", "host=db password = *** dbname=x"),
    ])
    func redactedURLHidesPasswords(url: String, expected: String) {
        #expect(PostgresConfiguration(url: url).redactedURL == expected)
    }

    @Test func scrubRemovesRawAndDecodedPasswords() {
        let url = "postgresql://u:s3cr%40t@host:1/db"
        let scrubbed = ConnectionString.scrub("bad token \"u:s3cr%40t@host\" / s3cr@t / \(url)", conninfo: url)
        #expect(!scrubbed.contains("s3cr"))
        #expect(scrubbed.contains("postgresql://u:***@host:1/db"))
    }

    @Test func configurationDefaults() {
        let config = PostgresConfiguration(url: "postgresql://x")
        #expect(config.poolSize == 4)
        #expect(config.connectTimeoutSeconds == 5)
        #expect(config.applicationName == "order-service")
    }

    @Test func errorClassification() {
        func error(_ kind: PostgresError.Kind, _ state: String?) -> PostgresError {
            PostgresError(kind: kind, sqlState: state, message: "m")
        }
        #expect(error(.connection, nil).isRetriable)
        for state in ["08006", "08001", "40001", "40P01", "57P01", "57P02", "57P03", "53300"] {
            #expect(error(.query, state).isRetriable, "\(state)")
        }
        for state in ["23505", "42P01", "22P02", "57014"] {
            #expect(!error(.query, state).isRetriable, "\(state)")
        }
        #expect(!error(.decode, nil).isRetriable)
        #expect(!error(.closed, nil).isRetriable)
        #expect(error(.query, "23505").isUniqueViolation)
        #expect(!error(.query, "23503").isUniqueViolation)
        #expect(error(.query, "42P01").description == "PostgresError.query [42P01]: m")
        // At start-up: what no wait mends ends the start; outages and conflicts are waited out.
        for state in ["42501", "23505", "3D000", "28P01", "22P02", "54000", "0A000"] {
            #expect(error(.query, state).isLastingStartupError, "\(state)")
        }
        for state in ["08006", "40P01", "57P03", "53300", "55P03", "XX000"] {
            #expect(!error(.query, state).isLastingStartupError, "\(state)")
        }
        #expect(!error(.connection, nil).isLastingStartupError)
        #expect(!error(.connection, "28P01").isLastingStartupError, "a connection that failed is waited for")
    }

    @Test func timestampFormatting() {
        #expect(PostgresTimestamp.format(Date(timeIntervalSince1970: 0)) == "1970-01-01T00:00:00.000000Z")
        #expect(
            PostgresTimestamp.format(Date(timeIntervalSince1970: 1_700_000_000.123456))
                == "2023-11-14T22:13:20.123456Z")
        #expect(PostgresTimestamp.format(Date(timeIntervalSince1970: -0.5)) == "1969-12-31T23:59:59.500000Z")
        #expect(PostgresTimestamp.format(Date(timeIntervalSince1970: 951_782_400)) == "2000-02-29T00:00:00.000000Z")
        // Proleptic Gregorian like PostgreSQL (Foundation's calendars switch to Julian before 1582).
        #expect(PostgresTimestamp.format(Date(timeIntervalSince1970: -12_219_292_800)) == "1582-10-15T00:00:00.000000Z")
        #expect(PostgresTimestamp.format(Date(timeIntervalSince1970: -13_569_552_000)) == "1540-01-01T00:00:00.000000Z")
        #expect(PostgresTimestamp.format(Date(timeIntervalSince1970: 253_402_300_799)) == "9999-12-31T23:59:59.000000Z")
    }

    @Test(arguments: [
        ("2023-11-14 22:13:20.123456+00", 1_700_000_000.123456),
        ("2023-11-14 22:13:20+00", 1_700_000_000),
        ("2023-11-14 22:13:20.5Z", 1_700_000_000.5),
        ("2023-11-15 07:13:20.1+09", 1_700_000_000.1),
        ("2023-11-14 16:43:20-05:30", 1_700_000_000),
        ("2023-11-14T22:13:20", 1_700_000_000),
        ("2023-11-14", 1_699_920_000),
        ("1969-12-31 23:59:59.999999+00", -0.000001),
    ])
    func timestampParsing(text: String, seconds: Double) throws {
        let date = try #require(PostgresTimestamp.parse(text))
        #expect(abs(date.timeIntervalSince1970 - seconds) < 0.000_000_5)
    }

    @Test(arguments: ["infinity", "-infinity", "2023-11-14 22:13:20 BC", "2023-13-01", "2023-11-14 22:13", "x"])
    func timestampParsingRejects(text: String) {
        #expect(PostgresTimestamp.parse(text) == nil)
    }

    @Test func timestampRoundTripIsExactToTheMicrosecond() throws {
        for micros in [0, 1, 123_456, 999_999] as [Int64] {
            for seconds in [-86_400 * 365 * 50, 0, 1_700_000_000, 4_102_444_800] as [Int64] {
                let date = Date(timeIntervalSince1970: Double(seconds * 1_000_000 + micros) / 1_000_000)
                let text = PostgresTimestamp.format(date)
                let parsed = try #require(PostgresTimestamp.parse(text))
                #expect(PostgresTimestamp.format(parsed) == text)
            }
        }
    }

    @Test func decimalDecodingIsExact() throws {
        func decode(_ text: String) throws -> Decimal {
            try Decimal(postgresCell: PostgresCell(column: "c", text: text))
        }
        let posix = Locale(identifier: "en_US_POSIX")
        #expect(try decode("12345678901.99") == Decimal(string: "12345678901.99", locale: posix))
        #expect(try decode("0.30").description == "0.3")
        #expect(try decode("-0.000001") == Decimal(sign: .minus, exponent: -6, significand: 1))
        #expect(try decode("1000000000000000000000000000000000000000000000000") > 0)  // zeros are exponent
        #expect(try decode("0.10000000000000000000000000000000000000000000") == Decimal(string: "0.1", locale: posix))
        #expect(try decode("NaN").isNaN)
        #expect(throws: PostgresError.self) { try decode("1234567890123456789012345678901234567.89") }  // 39 digits
        #expect(throws: PostgresError.self) { try decode("Infinity") }
        #expect(throws: PostgresError.self) { try decode("12abc") }
        #expect(throws: PostgresError.self) { try decode("1,5") }
    }

    @Test func decodeErrorsNameTheColumnNotTheValue() throws {
        let row = PostgresRow(columns: ["secret"], columnIndex: ["secret": 0], values: ["hunter2"])
        let error = try #require(throws: PostgresError.self) { try row.decode(0, as: Int.self) }
        #expect(error.kind == .decode)
        #expect(error.description.contains("secret"))
        #expect(!error.description.contains("hunter2"))
        #expect(throws: PostgresError.self) { try row.decode(1, as: String.self) }
        #expect(throws: PostgresError.self) { try row.decode("missing", as: String.self) }
    }

    @Test func byteaHexDecoding() throws {
        func decode(_ text: String?) throws -> [UInt8]? {
            try [UInt8]?(postgresCell: PostgresCell(column: "b", text: text))
        }
        #expect(try decode("\\x00ff10Ab") == [0x00, 0xff, 0x10, 0xab])
        #expect(try decode("\\x") == [])
        #expect(try decode(nil) == nil)
        #expect(throws: PostgresError.self) { try decode("\\x0") }
        #expect(throws: PostgresError.self) { try decode("\\xzz") }
        #expect(throws: PostgresError.self) { try decode("abc") }
        #expect(throws: PostgresError.self) { try decode("") }
        #expect(throws: PostgresError.self) { try decode("\\x0g") }
        #expect(throws: PostgresError.self) { try decode("x\\00") }
        let all = (0...255).map(UInt8.init) + (0...255).reversed().map(UInt8.init)
        #expect(try decode("\\x" + all.map { String(format: "%02x", $0) }.joined()) == all)
    }

    @Test func parameterEncoding() {
        #expect(Double(0.1).postgresParameter == .text("0.1"))
        #expect(Double.infinity.postgresParameter == .text("Infinity"))
        #expect((-Double.infinity).postgresParameter == .text("-Infinity"))
        #expect(Double.nan.postgresParameter == .text("NaN"))
        #expect(
            Decimal(string: "12345678901.99", locale: Locale(identifier: "en_US_POSIX"))!.postgresParameter
                == .text("12345678901.99"))
        #expect(true.postgresParameter == .text("true"))
        #expect(Int64.min.postgresParameter == .text("-9223372036854775808"))
        #expect(String?.none.postgresParameter == .null)
        #expect(Substring("ab").postgresParameter == .text("ab"))
        #expect(([1, 2] as [UInt8]).postgresParameter == .bytea([1, 2]))
    }

    @Test func migrationListValidation() {
        let m = { (v: Int) in Migration(version: v, name: "m\(v)", sql: "SELECT 1") }
        #expect(throws: Never.self) { try MigrationRunner.validate([m(1), m(2), m(10)]) }
        #expect(throws: Never.self) { try MigrationRunner.validate([]) }
        #expect(throws: PostgresError.self) { try MigrationRunner.validate([m(1), m(1)]) }
        #expect(throws: PostgresError.self) { try MigrationRunner.validate([m(2), m(1)]) }
    }

    @Test func migrationTableNames() throws {
        #expect(try MigrationRunner.quotedIdentifier("schema_migrations") == "\"schema_migrations\"")
        #expect(try MigrationRunner.quotedIdentifier("app.schema_migrations") == "\"app\".\"schema_migrations\"")
        for bad in ["", "a b", "x\"; DROP TABLE y; --", "1abc", "a.b.c", "a."] {
            #expect(throws: PostgresError.self) { try MigrationRunner.quotedIdentifier(bad) }
        }
        #expect(MigrationRunner.lockKey(for: "a") == MigrationRunner.lockKey(for: "a"))
        #expect(MigrationRunner.lockKey(for: "a") != MigrationRunner.lockKey(for: "b"))
    }
}

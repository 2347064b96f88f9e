import Foundation
import Logging
import Postgres
import TestSupport
import Testing

/// Parameter binding, decoding and errors against the real server (`DATABASE_URL`).
@Suite(.timeLimit(.minutes(2))) struct QueryTests {
    @Test func databaseIsReachable() async throws {
        let version = try await TestDatabase.withClient { client in
            try await client.query("SELECT current_setting('server_version_num')::int").rows[0].decode(0, as: Int.self)
        }
        #expect(version >= 120_000)
    }

    @Test func hostileStringsAreBoundNotSpliced() async throws {
        try await TestDatabase.withClient { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id serial PRIMARY KEY, s text NOT NULL") {
                table in
                let hostile = [
                    "O'Reilly", "'; DROP TABLE \(table); --", "\"; DROP TABLE \(table); --", "\\", "\\'",
                    "back\\slash\\n",
                    "$1", "$$ dollar $$", "-- comment", "/* block */", "", " ", "tab\there\nnewline\r",
                    "héllo wörld 🌍 日本語 עברית", "\u{FEFF}bom", "😀👨‍👩‍👧‍👦", String(repeating: "x", count: 100_000),
                ]
                for value in hostile {
                    let inserted = try await client.query("INSERT INTO \(table) (s) VALUES ($1)", [value])
                    #expect(inserted.affectedRows == 1)
                    let echoed = try await client.query("SELECT $1::text AS v, length($1::text) AS n", [value])
                    #expect(try echoed.rows[0].decode("v", as: String.self) == value)
                    #expect(try echoed.rows[0].decode("n", as: Int.self) == value.unicodeScalars.count)
                }
                let rows = try await client.query("SELECT s FROM \(table) ORDER BY id").rows
                #expect(try rows.map { try $0.decode(0, as: String.self) } == hostile)
                // The table survived every "DROP TABLE" above.
                let count = try await client.query("SELECT count(*) FROM \(table) WHERE s = $1", ["O'Reilly"])
                #expect(try count.rows[0].decode(0, as: Int.self) == 1)
                let substring = try await client.query("SELECT $1::text", ["xx'yy"[...].dropFirst()])
                #expect(try substring.rows[0].decode(0, as: String.self) == "x'yy")
            }
        }
    }

    @Test func arrayLiteralsRoundTripAnyText() async throws {
        let texts: [String?] = [
            "plain", "", " ", "a,b", "{braces}", "\"quoted\"", "back\\slash", "NULL", nil, "O'Reilly", "héllo 🌍", "\\\"",
        ]
        let bytes: [[UInt8]] = [[], [0], Array(0...255), Array("json {\"a\":1}".utf8)]
        try await TestDatabase.withClient { client in
            let t = try await client.query(
                "SELECT v, n FROM unnest($1::text[]) WITH ORDINALITY AS u(v, n) ORDER BY n", [PostgresArrayLiteral(texts)])
            #expect(try t.rows.map { try $0.decode(0, as: String?.self) } == texts)
            let b = try await client.query(
                "SELECT v, n FROM unnest($1::bytea[]) WITH ORDINALITY AS u(v, n) ORDER BY n", [PostgresByteaArray(bytes)])
            #expect(try b.rows.map { try $0.decode(0, as: [UInt8].self) } == bytes)
            let withNulls: [[UInt8]?] = [nil, [1, 2], nil, []]
            let bn = try await client.query(
                "SELECT v, n FROM unnest($1::bytea[]) WITH ORDINALITY AS u(v, n) ORDER BY n", [PostgresByteaArray(withNulls)])
            #expect(try bn.rows.map { try $0.decode(0, as: [UInt8]?.self) } == withNulls)
            let noBytes = try await client.query(
                "SELECT coalesce(array_length($1::bytea[], 1), 0), $1::bytea[] = '{}'", [PostgresByteaArray([[UInt8]]())])
            #expect(try noBytes.rows[0].decode(0, as: Int.self) == 0)
            #expect(try noBytes.rows[0].decode(1, as: Bool.self))
            let i = try await client.query("SELECT sum(v) FROM unnest($1::bigint[]) AS u(v)", [PostgresArrayLiteral([Int64.max, Int64.min, 1] as [Int64])])
            #expect(try i.rows[0].decode(0, as: String.self) == "0")
            let empty = try await client.query("SELECT coalesce(array_length($1::text[], 1), 0)", [PostgresArrayLiteral([String?]())])
            #expect(try empty.rows[0].decode(0, as: Int.self) == 0)
        }
    }

    @Test func textParameterWithNULIsRejectedBeforeSending() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            let error = try await #require(throws: PostgresError.self) {
                _ = try await client.query("SELECT $1::text", ["a\u{0}b"])
            }
            #expect(error.kind == .query)
            #expect(error.sqlState == nil)
            #expect(try await client.query("SELECT 1").rows[0].decode(0, as: Int.self) == 1)
        }
    }

    @Test func byteaRoundTripsEveryByte() async throws {
        try await TestDatabase.withClient { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int PRIMARY KEY, b bytea") { table in
                let values: [[UInt8]] = [
                    Array(0...255), [], [0], [0, 0, 0], Array("'; DROP TABLE \(table); --\\x00".utf8),
                    (0..<70_000).map { UInt8(truncatingIfNeeded: $0 &* 31) },
                ]
                for (id, value) in values.enumerated() {
                    _ = try await client.query("INSERT INTO \(table) (id, b) VALUES ($1, $2)", [id, value])
                }
                let rows = try await client.query("SELECT b, length(b) FROM \(table) ORDER BY id").rows
                #expect(try rows.map { try $0.decode(0, as: [UInt8].self) } == values)
                #expect(try rows.map { try $0.decode(1, as: Int.self) } == values.map(\.count))
                let echoed = try await client.query("SELECT $1", [[0, 255, 39, 92] as [UInt8]])
                #expect(try echoed.rows[0].decode(0, as: [UInt8].self) == [0, 255, 39, 92])
            }
        }
    }

    @Test func nullsBothWays() async throws {
        try await TestDatabase.withClient { client in
            try await TestDatabase.withTemporaryTable(
                client, columns: "id int PRIMARY KEY, s text, n bigint, d numeric, t timestamptz, b bytea, f boolean"
            ) { table in
                let insert = "INSERT INTO \(table) (id, s, n, d, t, b, f) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                _ = try await client.query(
                    insert, [1, String?.none, Int64?.none, Decimal?.none, Date?.none, [UInt8]?.none, Bool?.none])
                _ = try await client.query(
                    insert,
                    [
                        2, String?("x"), Int64?(7), Decimal?(Decimal(5)), Date?(Date(timeIntervalSince1970: 0)),
                        [UInt8]?([1]), Bool?(true),
                    ])
                let rows = try await client.query("SELECT s, n, d, t, b, f FROM \(table) ORDER BY id").rows
                let null = rows[0]
                #expect((0..<6).allSatisfy { null.isNull($0) })
                #expect(null.isNull("s"))
                #expect(try null.decode("s", as: String?.self) == nil)
                #expect(try null.decode("n", as: Int64?.self) == nil)
                #expect(try null.decode("d", as: Decimal?.self) == nil)
                #expect(try null.decode("t", as: Date?.self) == nil)
                #expect(try null.decode("b", as: [UInt8]?.self) == nil)
                #expect(try null.decode("f", as: Bool?.self) == nil)
                let error = try #require(throws: PostgresError.self) { try null.decode("s", as: String.self) }
                #expect(error.kind == .decode)

                let full = rows[1]
                #expect(!full.isNull(0))
                #expect(try full.decode("s", as: String?.self) == "x")
                #expect(try full.decode("n", as: Int64?.self) == 7)
                #expect(try full.decode("d", as: Decimal?.self) == 5)
                #expect(try full.decode("t", as: Date?.self) == Date(timeIntervalSince1970: 0))
                #expect(try full.decode("b", as: [UInt8]?.self) == [1])
                #expect(try full.decode("f", as: Bool?.self) == true)

                let isNull = try await client.query(
                    "SELECT $1::text IS NULL, $2::int IS NULL", [String?.none, Int?(1)])
                #expect(try isNull.rows[0].decode(0, as: Bool.self))
                #expect(try !isNull.rows[0].decode(1, as: Bool.self))
                let explicit = try await client.query("SELECT $1::text IS NULL", [PostgresParameter.null])
                #expect(try explicit.rows[0].decode(0, as: Bool.self))
            }
        }
    }

    @Test func numericIsExact() async throws {
        let posix = Locale(identifier: "en_US_POSIX")
        func decimal(_ text: String) -> Decimal { Decimal(string: text, locale: posix)! }
        try await TestDatabase.withClient { client in
            let sum = try await client.query(
                "SELECT $1::numeric + $2::numeric, $1::numeric + $2::numeric = 0.30",
                [decimal("0.10"), decimal("0.20")])
            #expect(try sum.rows[0].decode(0, as: Decimal.self) == decimal("0.30"))
            #expect(try sum.rows[0].decode(1, as: Bool.self))

            try await TestDatabase.withTemporaryTable(client, columns: "id int PRIMARY KEY, amount numeric(20, 2)") {
                table in
                let amounts = ["12345678901.99", "0.01", "-0.10", "999999999999999999.99", "0.00"].map(decimal)
                for (id, amount) in amounts.enumerated() {
                    _ = try await client.query("INSERT INTO \(table) VALUES ($1, $2)", [id, amount])
                }
                let rows = try await client.query("SELECT amount, amount::text FROM \(table) ORDER BY id").rows
                #expect(try rows.map { try $0.decode(0, as: Decimal.self) } == amounts)
                #expect(try rows[0].decode(1, as: String.self) == "12345678901.99")
                #expect(try rows[0].decode(0, as: Decimal.self).description == "12345678901.99")
                let total = try await client.query("SELECT sum(amount) FROM \(table) WHERE id < 3")
                #expect(try total.rows[0].decode(0, as: Decimal.self) == decimal("12345678901.90"))
            }
            // Too many digits for Foundation.Decimal: an error, never a silently rounded amount.
            let wide = try await client.query("SELECT '1234567890123456789012345678901234567890.5'::numeric")
            #expect(throws: PostgresError.self) { try wide.rows[0].decode(0, as: Decimal.self) }
            let double = try await client.query("SELECT $1::float8, $2::float8", [0.1, Double.infinity])
            #expect(try double.rows[0].decode(0, as: Double.self) == 0.1)
            #expect(try double.rows[0].decode(1, as: Double.self) == .infinity)
        }
    }

    @Test func integerExtremes() async throws {
        try await TestDatabase.withClient { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int PRIMARY KEY, big bigint, small int") {
                table in
                let cases: [(Int64, Int32)] = [(.max, .max), (.min, .min), (0, 0), (-1, -1)]
                for (id, (big, small)) in cases.enumerated() {
                    _ = try await client.query("INSERT INTO \(table) VALUES ($1, $2, $3)", [id, big, small])
                }
                let rows = try await client.query("SELECT big, small FROM \(table) ORDER BY id").rows
                #expect(try rows.map { try $0.decode(0, as: Int64.self) } == cases.map(\.0))
                #expect(try rows.map { try $0.decode(1, as: Int32.self) } == cases.map(\.1))
                #expect(try rows[0].decode(0, as: Int.self) == Int.max)
                // bigint max does not fit Int32: a decode error, not a trap or truncation.
                #expect(throws: PostgresError.self) { try rows[0].decode(0, as: Int32.self) }
                let overflow = try await #require(throws: PostgresError.self) {
                    _ = try await client.query("SELECT $1::bigint + 1", [Int64.max])
                }
                #expect(overflow.sqlState == "22003")
            }
        }
    }

    @Test func timestampsRoundTripInUTC() async throws {
        try await TestDatabase.withClient { client in
            #expect(
                try await client.query("SELECT current_setting('TimeZone')").rows[0].decode(0, as: String.self) == "UTC"
            )
            try await TestDatabase.withTemporaryTable(client, columns: "id int PRIMARY KEY, at timestamptz NOT NULL") {
                table in
                let dates = [
                    Date(timeIntervalSince1970: 1_700_000_000.123456), Date(timeIntervalSince1970: -14_182_939.5),
                    Date(timeIntervalSince1970: 0), Date(timeIntervalSince1970: 4_102_444_799.999999),
                ]
                for (id, date) in dates.enumerated() {
                    _ = try await client.query("INSERT INTO \(table) VALUES ($1, $2)", [id, date])
                }
                let rows = try await client.query("SELECT at, at::text FROM \(table) ORDER BY id").rows
                for (row, date) in zip(rows, dates) {
                    let decoded = try row.decode(0, as: Date.self)
                    #expect(abs(decoded.timeIntervalSince(date)) < 0.000_001)
                }
                #expect(try rows[0].decode(1, as: String.self) == "2023-11-14 22:13:20.123456+00")
                #expect(try rows[1].decode(1, as: String.self) == "1969-07-20 20:17:40.5+00")
            }
            let now = try await client.query("SELECT now()").rows[0].decode(0, as: Date.self)
            #expect(abs(now.timeIntervalSinceNow) < 60)
        }
    }

    @Test func sessionIsUTCEvenWhenTheURLAsksOtherwise() async throws {
        let url =
            TestDatabase.url + (TestDatabase.url.contains("?") ? "&" : "?") + "options=-c%20TimeZone%3DAsia%2FTokyo"
        let connection = try await PostgresConnection.connect(
            TestDatabase.configuration(url: url), logger: TestDatabase.logger)
        let result = try await connection.query(
            "SELECT current_setting('TimeZone'), $1::timestamptz", [Date(timeIntervalSince1970: 0)])
        await connection.close()
        #expect(try result.rows[0].decode(0, as: String.self) == "UTC")
        #expect(try result.rows[0].decode(1, as: Date.self) == Date(timeIntervalSince1970: 0))
    }

    @Test func affectedRowsAndCommandTags() async throws {
        try await TestDatabase.withClient { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int PRIMARY KEY, v text") { table in
                let insert = try await client.query(
                    "INSERT INTO \(table) SELECT g, 'x' FROM generate_series(1, $1::int) g", [5])
                #expect(insert.affectedRows == 5)
                #expect(insert.commandTag == "INSERT 0 5")
                let update = try await client.query("UPDATE \(table) SET v = $1 WHERE id <= $2", ["y", 3])
                #expect(update.affectedRows == 3)
                let select = try await client.query("SELECT id, v FROM \(table) WHERE v = $1 ORDER BY id", ["y"])
                #expect(select.rows.count == 3)
                #expect(select.rows[0].columns == ["id", "v"])
                #expect(try select.rows.map { try $0.decode("id", as: Int.self) } == [1, 2, 3])
                let delete = try await client.query("DELETE FROM \(table) WHERE id = $1", [42])
                #expect(delete.affectedRows == 0)
            }
        }
    }

    @Test func executeRunsSeveralStatements() async throws {
        let table = TestDatabase.uniqueName("multi")
        try await TestDatabase.withClient { client in
            try await client.withConnection { connection in
                try await connection.execute(
                    "CREATE TABLE \(table) (id int); INSERT INTO \(table) VALUES (1), (2); "
                        + "INSERT INTO \(table) VALUES (3);")
                let count = try await connection.query("SELECT count(*) FROM \(table)")
                #expect(try count.rows[0].decode(0, as: Int.self) == 3)
                try await connection.execute("DROP TABLE \(table)")
            }
        }
    }

    @Test func serverErrorsCarrySQLState() async throws {
        try await TestDatabase.withClient { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int PRIMARY KEY") { table in
                _ = try await client.query("INSERT INTO \(table) VALUES ($1)", [1])
                let duplicate = try await #require(throws: PostgresError.self) {
                    _ = try await client.query("INSERT INTO \(table) VALUES ($1)", [1])
                }
                #expect(duplicate.kind == .query)
                #expect(duplicate.sqlState == "23505")
                #expect(duplicate.isUniqueViolation)
                #expect(!duplicate.isRetriable)
                #expect(duplicate.constraint == "\(table)_pkey")
                #expect(duplicate.description.contains("23505"))
                #expect(duplicate.description.contains("duplicate key"))
                expectNoSecrets(duplicate)
            }
            let missing = try await #require(throws: PostgresError.self) {
                _ = try await client.query("SELECT * FROM \(TestDatabase.uniqueName("missing"))")
            }
            #expect(missing.sqlState == "42P01")
            #expect(!missing.isUniqueViolation)
            expectNoSecrets(missing)
            let invalid = try await #require(throws: PostgresError.self) {
                _ = try await client.query("SELECT $1::int", ["not a number"])
            }
            #expect(invalid.sqlState == "22P02")
            expectNoSecrets(invalid)
            let syntax = try await #require(throws: PostgresError.self) {
                try await client.withConnection { try await $0.execute("SELEC 1") }
            }
            #expect(syntax.sqlState == "42601")
            // A failed statement leaves the pooled connection usable.
            #expect(try await client.query("SELECT 2").rows[0].decode(0, as: Int.self) == 2)
        }
    }

    @Test func connectFailureIsRetriableAndHidesThePassword() async throws {
        let password = "Hunter2-\(UInt32.random(in: 0...UInt32.max))"
        var components = try #require(URLComponents(string: TestDatabase.url))
        components.password = password
        let wrongPassword = try #require(components.string)
        components.port = 1  // nothing listens there
        let wrongPort = try #require(components.string)
        for url in [wrongPassword, wrongPort, "postgresql://u:\(password)@[::1/db"] {
            let client = PostgresClient(
                configuration: TestDatabase.configuration(url: url), logger: TestDatabase.logger)
            let error = try await #require(throws: PostgresError.self) { _ = try await client.query("SELECT 1") }
            await client.close()
            #expect(error.kind == .connection)
            #expect(error.isRetriable)
            #expect(!error.description.contains(password), "\(error)")
            #expect(!"\(error)".contains(password))
            #expect(!error.message.isEmpty)
        }
    }

    @Test func closedConnectionThrowsClosed() async throws {
        let connection = try await PostgresConnection.connect(TestDatabase.configuration(), logger: TestDatabase.logger)
        #expect(!connection.isBroken)
        await connection.close()
        await connection.close()
        #expect(connection.isBroken)
        let error = try await #require(throws: PostgresError.self) { _ = try await connection.query("SELECT 1") }
        #expect(error.kind == .closed)
        #expect(!error.isRetriable)
    }

    @Test func cancellingATaskCancelsTheRunningStatement() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            // The pool's only connection: its backend is the one that will run the statement.
            let pid = try await client.query("SELECT pg_backend_pid()").rows[0].decode(0, as: Int32.self)
            let started = ContinuousClock.now
            let task = Task { try await client.query("SELECT pg_sleep(30)") }
            // Wait until the server is really running it, so the cancel has to go through the server.
            try await TestDatabase.waitUntilSleeping(backend: pid)
            task.cancel()
            let error = try await #require(throws: PostgresError.self) {
                _ = try await TestKafka.within(.seconds(20), "the cancelled statement") { try await task.value }
            }
            #expect(error.sqlState == "57014", "\(error)")  // query_canceled
            #expect(!error.isRetriable)
            // Generous on a loaded machine; what it protects: the statement was interrupted, not
            // waited out (it sleeps 30 s).
            #expect(ContinuousClock.now - started < .seconds(20))
            #expect(try await client.query("SELECT 3").rows[0].decode(0, as: Int.self) == 3)
        }
    }

    @Test func aCancelledTaskStartsNoStatementAndCommitsNothing() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int") { table in
                let pid = try await client.query("SELECT pg_backend_pid()").rows[0].decode(0, as: Int32.self)
                let gate = AsyncStream<Void>.makeStream()
                let inserted = AsyncStream<Void>.makeStream()
                let task = Task {
                    try await client.transaction { connection in
                        _ = try await connection.query("INSERT INTO \(table) VALUES ($1)", [1])
                        inserted.continuation.finish()
                        for await _ in gate.stream {}  // returns once cancelled
                        _ = try await connection.query("INSERT INTO \(table) VALUES ($1)", [2])
                    }
                }
                // Cancel only once the first row is written inside the open transaction (seen by
                // the server too), so the test shows that row rolled back, not a cancel that came first.
                try await TestKafka.within(.seconds(20), "the first insert") { for await _ in inserted.stream {} }
                try await TestDatabase.withClient(poolSize: 1) { observer in
                    let state = try await observer.query("SELECT state FROM pg_stat_activity WHERE pid = $1", [pid])
                    #expect(try state.rows.first?.decode(0, as: String.self) == "idle in transaction")
                }
                task.cancel()
                let outcome = await TestKafka.result {
                    try await TestKafka.within(.seconds(20), "the cancelled transaction") { try await task.value }
                }
                #expect(throws: CancellationError.self) { try outcome.get() }
                let count = try await client.query("SELECT count(*) FROM \(table)")
                #expect(try count.rows[0].decode(0, as: Int.self) == 0)
            }
        }
    }

    private func expectNoSecrets(_ error: PostgresError, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(!error.description.contains(TestDatabase.url), sourceLocation: sourceLocation)
        if let password = URLComponents(string: TestDatabase.url)?.password, !password.isEmpty {
            #expect(!error.description.contains(":\(password)@"), sourceLocation: sourceLocation)
        }
    }
}

import Foundation
import Postgres
import TestSupport
import Testing

/// `PostgresSyncConnection.pipeline` and `later`: statements that do not need each other's results
/// share one network round trip, run in order, and fail as a statement of their own would.
extension QueryThenCommitTests {
    @Test func aPipelineAnswersEveryStatementInOrderInOneRoundTrip() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int PRIMARY KEY") { table in
                let pid = try await connection(client).pid
                for round in 0..<2 {  // prepared in the first round, cached in the second
                    var answers: [[Int]] = []
                    let spent = try await cost(client) {
                        answers = try await client.transactionOnQueue { conn in
                            try conn.pipeline([
                                ("INSERT INTO \(table) VALUES ($1) RETURNING id", [round * 10 + 1]),
                                ("SELECT id FROM \(table) WHERE id > $1 ORDER BY id", [round * 10]),
                                ("SELECT $1::int", [round]),
                            ]).map { try $0.rows.map { try $0.decode(0, as: Int.self) } }
                        }
                    }
                    #expect(answers == [[round * 10 + 1], [round * 10 + 1], [round]], "each its own result; the read sees the insert before it")
                    #expect(spent.handOffs == 1)
                    if round == 1 { #expect(spent.roundTrips == 2, "BEGIN + the three statements; COMMIT: \(spent)") }
                }
                #expect(try await ids(client, table) == [1, 11])
                try await expectReusable(client, pid: pid)
            }
        }
    }

    @Test func aFailingStatementOfAPipelineFailsItAndTheTransactionCommitsNothing() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int PRIMARY KEY") { table in
                let pid = try await connection(client).pid
                _ = try await client.query("INSERT INTO \(table) VALUES ($1)", [1])
                let error = await #expect(throws: PostgresError.self) {
                    try await client.transactionOnQueue { conn in
                        _ = try conn.pipeline([
                            ("INSERT INTO \(table) VALUES ($1)", [2]),
                            ("INSERT INTO \(table) VALUES ($1)", [1]),  // a duplicate key
                            ("SELECT 1 / $1::int", [0]),  // would fail too, if it ran
                        ])
                    }
                }
                #expect(error?.isUniqueViolation == true, "the failing statement's own error, not the one after it (22012): \(String(describing: error))")
                #expect(try await ids(client, table) == [1], "the insert before the failure is rolled back")
                try await expectReusable(client, pid: pid)
                // Outside a transaction block the pipeline is one implicit transaction: all or nothing.
                await #expect(throws: PostgresError.self) {
                    try await client.onQueue { conn in
                        _ = try conn.pipeline([("INSERT INTO \(table) VALUES ($1)", [4]), ("INSERT INTO \(table) VALUES ($1)", [1])])
                    }
                }
                #expect(try await ids(client, table) == [1])
                try await expectReusable(client, pid: pid)
            }
        }
    }

    @Test func laterStatementsGoWithTheNextStatementInItsRoundTrip() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int PRIMARY KEY") { table in
                let pid = try await connection(client).pid
                for round in 0..<2 {
                    var returned: [Int] = []
                    let spent = try await cost(client) {
                        returned = try await client.transactionOnQueue { conn in
                            conn.later("INSERT INTO \(table) VALUES ($1)", [round * 10 + 1])
                            conn.later("INSERT INTO \(table) VALUES ($1)", [round * 10 + 2])
                            return try conn.queryThenCommit("SELECT count(*)::int FROM \(table) WHERE id > $1", [round * 10])
                                .rows.map { try $0.decode(0, as: Int.self) }
                        }
                    }
                    #expect(returned == [2], "the later inserts ran first")
                    if round == 1 { #expect(spent.handOffs == 1 && spent.roundTrips == 1, "BEGIN, two inserts, the count and COMMIT: \(spent)") }
                }
                #expect(try await ids(client, table) == [1, 2, 11, 12])
                // Alone in a transaction: BEGIN, they and COMMIT in one round trip when the body returns.
                let alone = try await cost(client) {
                    try await client.transactionOnQueue { conn in conn.later("INSERT INTO \(table) VALUES ($1)", [3]) }
                }
                #expect(alone.handOffs == 1 && alone.roundTrips == 1, "\(alone)")
                // Outside a transaction: sent when the body returns.
                try await client.onQueue { conn in conn.later("INSERT INTO \(table) VALUES ($1)", [4]) }
                #expect(try await ids(client, table) == [1, 2, 3, 4, 11, 12])
                // A body that throws first sends nothing.
                struct Stop: Error {}
                let dropped = try await cost(client) {
                    await #expect(throws: Stop.self) {
                        try await client.transactionOnQueue { conn in
                            conn.later("INSERT INTO \(table) VALUES ($1)", [5])
                            throw Stop()
                        }
                    }
                }
                #expect(dropped.roundTrips == 0, "\(dropped)")
                #expect(try await ids(client, table) == [1, 2, 3, 4, 11, 12])
                try await expectReusable(client, pid: pid)
            }
        }
    }

    @Test func aFailingLaterStatementFailsTheCallThatSentItAndNothingAfterItRuns() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int PRIMARY KEY") { table in
                let pid = try await connection(client).pid
                let error = await #expect(throws: PostgresError.self) {
                    try await client.transactionOnQueue { conn in
                        _ = try conn.query("INSERT INTO \(table) VALUES ($1)", [1])
                        conn.later("INSERT INTO \(table) VALUES ($1)", [1])  // a duplicate key
                        _ = try conn.queryThenCommit("SELECT 1 / $1::int", [0])  // would fail too, if it ran
                    }
                }
                #expect(error?.isUniqueViolation == true, "the later statement's error, from the call that sent it: \(String(describing: error))")
                #expect(try await ids(client, table) == [], "nothing committed")
                try await expectReusable(client, pid: pid)
                // With COMMIT at the body's end: the same.
                await #expect(throws: PostgresError.self) {
                    try await client.transactionOnQueue { conn in
                        conn.later("INSERT INTO \(table) VALUES ($1)", [3])
                        conn.later("INSERT INTO \(table) VALUES ($1)", [3])
                    }
                }
                #expect(try await ids(client, table) == [])
                try await expectReusable(client, pid: pid)
            }
        }
    }

    @Test func laterStatementsInsideAnAsyncTransactionGoWithItsStatementsAndCommit() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int PRIMARY KEY") { table in
                let pid = try await connection(client).pid
                // The pending BEGIN goes with the first pipeline; what is queued last goes when the body returns.
                try await client.transaction { conn in
                    try await conn.onQueue { c in
                        c.later("INSERT INTO \(table) VALUES ($1)", [1])
                        let counted = try c.pipeline([("INSERT INTO \(table) VALUES ($1)", [2]), ("SELECT count(*)::int FROM \(table)", [])])
                        #expect(try counted.last?.rows.first?.decode(0, as: Int.self) == 2)
                        c.later("INSERT INTO \(table) VALUES ($1)", [3])
                    }
                    _ = try await conn.query("INSERT INTO \(table) VALUES ($1)", [4])
                }
                #expect(try await ids(client, table) == [1, 2, 3, 4])
                // `commit` with queued statements ends the async transaction in that hop: no COMMIT follows.
                _ = try await client.transaction { conn in try await conn.onQueue { c in c.later("INSERT INTO \(table) VALUES ($1)", [5]) } }
                let spent = try await cost(client) {
                    try await client.transaction { conn in
                        try await conn.onQueue { c in
                            c.later("INSERT INTO \(table) VALUES ($1)", [6])
                            try c.commit()
                        }
                    }
                }
                #expect(spent.handOffs == 1 && spent.roundTrips == 1, "BEGIN, the insert and COMMIT in one hop and one round trip: \(spent)")
                #expect(try await ids(client, table) == [1, 2, 3, 4, 5, 6])
                try await expectReusable(client, pid: pid)
            }
        }
    }

    @Test func aCallRefusedBeforeItReachedTheServerKeepsTheLaterStatementsQueued() async throws {
        try await TestDatabase.withClient(poolSize: 1) { client in
            try await TestDatabase.withTemporaryTable(client, columns: "id int PRIMARY KEY") { table in
                let pid = try await connection(client).pid
                try await client.transactionOnQueue { conn in
                    conn.later("INSERT INTO \(table) VALUES ($1)", [1])
                    // A NUL cannot travel in a text value: refused here, nothing sent.
                    #expect(throws: PostgresError.self) { _ = try conn.query("SELECT $1::text", ["a\u{0}b"]) }
                    _ = try conn.queryThenCommit("INSERT INTO \(table) VALUES ($1)", [2])
                }
                #expect(try await ids(client, table) == [1, 2], "the queued insert went with the next statement, in the transaction")
                try await expectReusable(client, pid: pid)
            }
        }
    }
}

import Foundation
import OrderCore
import Postgres
import TestSupport
import Testing

/// The group-commit window (`CartBatcher.Configuration.window`): requests that arrive while a new
/// batch waits go into its transaction; a lone request waits the window, then commits.
@Suite("Cart batches: the window", .timeLimit(.minutes(2)))
struct CartBatcherWindowTests {
    static let product = Product(productId: 7, name: "Windowed", price: Money("1.25")!)!

    func withBatcher(window: Duration, _ body: (CartBatcher, PostgresClient) async throws -> Void) async throws {
        try await TestDatabase.withClient(poolSize: 4) { client in
            _ = try await MigrationRunner(client: client, logger: TestDatabase.logger, table: OrderSchema.migrationsTable)
                .migrate(OrderSchema.migrations)
            var configuration = CartBatcher.Configuration()
            configuration.window = window
            try await body(CartBatcher(store: OrderStore(db: client), configuration: configuration), client)
        }
    }

    static func add(_ user: Int64) -> CartBatcher.Request {
        CartBatcher.Request(key: "w/\(user)", userId: user, operation: .add(product, quantity: 1)) { _ in
            RequestOutcome(action: nil, status: .ok, reply: Array("ok".utf8))
        }
    }

    /// The transaction that last wrote the user's cart row.
    static func writer(_ user: Int64, _ client: PostgresClient) async throws -> String {
        let rows = try await client.query("SELECT xmin::text FROM carts WHERE user_id = $1", [user]).rows
        return try #require(rows.first).decode(0, as: String.self)
    }

    @Test func requestsArrivingWithinTheWindowShareOneTransaction() async throws {
        // A long window, so that the second caller lands in it even on a pool starved for seconds
        // by a parallel test run (with 1 s it once did not, in CI).
        try await withBatcher(window: .seconds(10)) { batcher, client in
            let first = TestCatalog.uniqueUserId(), second = TestCatalog.uniqueUserId()
            let a = Task { try await batcher.run(Self.add(first)) }
            try await Task.sleep(for: .milliseconds(40))
            // Well inside the first one's window, and with a batch slot free: still its batch.
            let b = Task { try await batcher.run(Self.add(second)) }
            #expect(try await a.value != .duplicate)
            #expect(try await b.value != .duplicate)
            let (w1, w2) = (try await Self.writer(first, client), try await Self.writer(second, client))
            #expect(w1 == w2)
        }
    }

    @Test func aLoneRequestWaitsTheWindowThenCommits() async throws {
        try await withBatcher(window: .milliseconds(300)) { batcher, client in
            let user = TestCatalog.uniqueUserId()
            let clock = ContinuousClock()
            let started = clock.now
            #expect(try await batcher.run(Self.add(user)) != .duplicate)
            #expect(clock.now - started >= .milliseconds(300))
            #expect(try await batcher.store.cart(userId: user).items.map(\.quantity) == [1])
            // The next one, alone again, gets a window of its own and commits separately.
            let next = TestCatalog.uniqueUserId()
            #expect(try await batcher.run(Self.add(next)) != .duplicate)
            let (w1, w2) = (try await Self.writer(user, client), try await Self.writer(next, client))
            #expect(w1 != w2)
        }
    }

    @Test func withoutAWindowRequestsAfterABatchGetTheirOwn() async throws {
        try await withBatcher(window: .zero) { batcher, client in
            let first = TestCatalog.uniqueUserId(), second = TestCatalog.uniqueUserId()
            #expect(try await batcher.run(Self.add(first)) != .duplicate)
            #expect(try await batcher.run(Self.add(second)) != .duplicate)
            let (w1, w2) = (try await Self.writer(first, client), try await Self.writer(second, client))
            #expect(w1 != w2)
        }
    }
}

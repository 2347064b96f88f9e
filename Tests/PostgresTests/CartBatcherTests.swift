import Foundation
import OrderCore
import Postgres
import TestSupport
import Testing

/// Group commit of cart requests against the real server: what a batch commits, how repeats of a
/// key are answered, and that one bad request does not fail its batch-mates.
@Suite("Cart batches (group commit)", .timeLimit(.minutes(2)))
struct CartBatcherTests {
    static let product = Product(productId: 7, name: "Batched \"thing\" \\ , {x}", price: Money("2.50")!)!

    /// A batcher on a migrated database; `maxConcurrentBatches` 1 so concurrent requests share batches.
    func withBatcher(_ body: (CartBatcher) async throws -> Void) async throws {
        try await TestDatabase.withClient(poolSize: 4) { client in
            _ = try await MigrationRunner(client: client, logger: TestDatabase.logger, table: OrderSchema.migrationsTable)
                .migrate(OrderSchema.migrations)
            var configuration = CartBatcher.Configuration()
            configuration.maxConcurrentBatches = 1
            try await body(CartBatcher(store: OrderStore(db: client), configuration: configuration))
        }
    }

    static func user() -> Int64 { TestCatalog.uniqueUserId() }

    static func request(_ key: String, _ user: Int64, _ op: OrderStore.CartOperation) -> CartBatcher.Request {
        CartBatcher.Request(key: key, userId: user, operation: op) { change in
            guard case .changed(let cart) = change else { return outcome(Array("refused \(change)".utf8)) }
            return outcome(cart.json.bytes)
        }
    }

    /// A reply of these bytes (what the batcher stores; action and status do not matter here).
    static func outcome(_ bytes: [UInt8]) -> RequestOutcome { RequestOutcome(action: nil, status: .ok, reply: bytes) }

    static func quantities(_ reply: CartBatcher.Outcome) throws -> [Int64] {
        guard case .stored(let outcome) = reply, case .array(let items)? = try JSON.parse(outcome.reply)["items"] else { return [] }
        return items.compactMap { if case .int(let q)? = $0["quantity"] { q } else { nil } }
    }

    @Test func concurrentRequestsOfManyUsersAllCommitWithTheirOwnCarts() async throws {
        try await withBatcher { batcher in
            let users = (0..<150).map { _ in Self.user() }
            let outcomes = try await withThrowingTaskGroup(of: (Int64, CartBatcher.Outcome).self) { group in
                for (i, user) in users.enumerated() {
                    group.addTask {
                        (user, try await batcher.run(Self.request("t/\(user)/a", user, .add(Self.product, quantity: i + 1))))
                    }
                }
                return try await group.reduce(into: [Int64: CartBatcher.Outcome]()) { $0[$1.0] = $1.1 }
            }
            for (i, user) in users.enumerated() {
                #expect(try Self.quantities(outcomes[user]!) == [Int64(i + 1)])
                // The stored reply is the one that was returned.
                guard case .stored(let outcome) = outcomes[user]! else { Issue.record("not stored"); continue }
                #expect(try await batcher.store.storedReply(key: "t/\(user)/a") == outcome.reply)
                let cart = try await batcher.store.cart(userId: user)
                #expect(cart.items.map(\.quantity) == [i + 1])
                #expect(cart.items.first?.productName == Self.product.name)
            }
        }
    }

    @Test func aRepeatedKeyIsADuplicateAndAppliesOnce() async throws {
        try await withBatcher { batcher in
            let user = Self.user()
            let key = "t/\(user)/once"
            // The same key twice at once (likely one batch), then again later.
            async let a = batcher.run(Self.request(key, user, .add(Self.product, quantity: 3)))
            async let b = batcher.run(Self.request(key, user, .add(Self.product, quantity: 3)))
            let both = try await [a, b]
            #expect(both.filter { $0 == .duplicate }.count == 1)
            #expect(try await batcher.run(Self.request(key, user, .add(Self.product, quantity: 3))) == .duplicate)
            #expect(try await batcher.store.cart(userId: user).items.map(\.quantity) == [3])
        }
    }

    @Test func aClaimStoresItsReplyWithTheBatchAndLeavesTheCartAlone() async throws {
        try await withBatcher { batcher in
            let user = Self.user()
            let key = "t/\(user)/claimed"
            let refusal = Self.outcome(Array(#"{"status":"error","claimed":true}"#.utf8))
            let claim = CartBatcher.Request(key: key, userId: user, operation: .claim) { _ in refusal }
            // A claim and a cart change of the same user at once: both commit, each with its reply.
            async let claimed = batcher.run(claim)
            async let added = batcher.run(Self.request("t/\(user)/add", user, .add(Self.product, quantity: 2)))
            let (claimedOutcome, addedOutcome) = try await (claimed, added)
            #expect(claimedOutcome == .stored(refusal))
            #expect(try Self.quantities(addedOutcome) == [2])
            #expect(try await batcher.store.storedReply(key: key) == refusal.reply)
            #expect(try await batcher.store.cart(userId: user).items.map(\.quantity) == [2])
            // A repeat of the claimed key is a duplicate and changes nothing.
            #expect(try await batcher.run(claim) == .duplicate)
            #expect(try await batcher.store.storedReply(key: key) == refusal.reply)
            // A claim of a user without a cart creates none.
            let other = Self.user()
            #expect(try await batcher.run(CartBatcher.Request(key: "t/\(other)/claimed", userId: other, operation: .claim) { _ in refusal }) == .stored(refusal))
            #expect(try await batcher.store.cart(userId: other).cartId == nil)
        }
    }

    @Test func readsUpdatesAndRemovalsInOrderForOneUser() async throws {
        try await withBatcher { batcher in
            let user = Self.user()
            let empty = try await batcher.run(Self.request("t/\(user)/g0", user, .get))
            #expect(try Self.quantities(empty) == [])
            _ = try await batcher.run(Self.request("t/\(user)/a", user, .add(Self.product, quantity: 2)))
            #expect(try Self.quantities(try await batcher.run(Self.request("t/\(user)/u", user, .set(productId: 7, quantity: 9)))) == [9])
            let missing = try await batcher.run(Self.request("t/\(user)/u2", user, .set(productId: 8, quantity: 1)))
            guard case .stored(let refusal) = missing else { Issue.record("refusal not stored"); return }
            #expect(String(decoding: refusal.reply, as: UTF8.self).hasPrefix("refused"))
            #expect(try Self.quantities(try await batcher.run(Self.request("t/\(user)/r", user, .set(productId: 7, quantity: 0)))) == [])
        }
    }

    @Test func aFailingRequestFailsAloneAndLeavesNoTrace() async throws {
        try await withBatcher { batcher in
            let users = (0..<20).map { _ in Self.user() }
            let badUser = Self.user()
            // Quantity 0 breaks a CHECK constraint (the decode stage never lets it through): the
            // batch fails, is re-run request by request, and only the bad request fails.
            let results = await withTaskGroup(of: (Int64, Result<CartBatcher.Outcome, any Error>).self) { group in
                for user in users {
                    group.addTask { (user, await captured { try await batcher.run(Self.request("t/\(user)/ok", user, .add(Self.product, quantity: 1))) }) }
                }
                group.addTask { (badUser, await captured { try await batcher.run(Self.request("t/\(badUser)/bad", badUser, .add(Self.product, quantity: 0))) }) }
                return await group.reduce(into: [Int64: Result<CartBatcher.Outcome, any Error>]()) { $0[$1.0] = $1.1 }
            }
            for user in users {
                let outcome = try results[user]!.get()
                #expect(try Self.quantities(outcome) == [1])
            }
            guard case .failure(let error) = results[badUser]! else { Issue.record("the bad request succeeded"); return }
            #expect((error as? PostgresError)?.isRetriable == false)
            let stored = try await batcher.store.storedReply(key: "t/\(badUser)/bad")
            #expect(stored == nil, "no reply stored for the failed request")
        }
    }

    /// The bound on amounts is kept by the cart functions themselves, under the cart's lock:
    /// a change that would take a line or the cart total above Money.max is refused and changes
    /// nothing (not even creating the cart).
    @Test func changesBeyondTheLargestTotalAreRefusedAndChangeNothing() async throws {
        try await withBatcher { batcher in
            let store = batcher.store
            let dear = try #require(Product(productId: 31, name: "dear", price: Money.max))
            let bigPrice = try #require(Money("400000000000.00"))
            let big = try #require(Product(productId: 32, name: "big", price: bigPrice))
            // A new user's first line already over the bound: refused before the cart exists.
            let fresh = Self.user()
            let refused = try await batcher.run(Self.request("t/\(fresh)/over", fresh, .add(dear, quantity: 2)))
            #expect(refused == .stored(Self.outcome(Array("refused overTotal".utf8))))
            #expect(try await store.cart(userId: fresh).cartId == nil, "no cart was created")

            let user = Self.user()
            _ = try await batcher.run(Self.request("t/\(user)/a1", user, .add(big, quantity: 2)))  // 800,000,000,000.00
            // Another line, or more of the same line, would pass the bound.
            for (key, op) in [("a2", OrderStore.CartOperation.add(dear, quantity: 1)), ("a3", .add(big, quantity: 1)), ("u1", .set(productId: 32, quantity: 3))] {
                let outcome = try await batcher.run(Self.request("t/\(user)/\(key)", user, op))
                #expect(outcome == .stored(Self.outcome(Array("refused overTotal".utf8))), "\(key)")
            }
            let cart = try await store.cart(userId: user)
            #expect(cart.items.map(\.quantity) == [2])
            #expect(cart.totalPrice.description == "800000000000.00")
            // Lowering and removing are never refused; up to the bound exactly is fine.
            #expect(try Self.quantities(try await batcher.run(Self.request("t/\(user)/u2", user, .set(productId: 32, quantity: 1)))) == [1])
            let restPrice = try #require(Money("599999999999.99"))
            let exact = try #require(Product(productId: 33, name: "rest", price: restPrice))
            _ = try await batcher.run(Self.request("t/\(user)/a4", user, .add(exact, quantity: 1)))
            #expect(try await store.cart(userId: user).totalPrice == Money.max)
        }
    }
}

private func captured<T: Sendable>(_ body: () async throws -> T) async -> Result<T, any Error> {
    do { return .success(try await body()) } catch { return .failure(error) }
}

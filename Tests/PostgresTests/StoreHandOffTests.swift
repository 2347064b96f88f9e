import Foundation
import Kafka
import Postgres
import TestSupport
import Testing

@testable import OrderCore

/// How many hand-offs to the connection's libpq queue the store's hot transactions cost: one each
/// (BEGIN, every statement and COMMIT run there in one go). Counted on the pool's only connection.
@Suite("Store hand-offs to the libpq queue", .timeLimit(.minutes(2)))
struct StoreHandOffTests {
    static let product = Product(productId: 17, name: "Counted", price: Money("3.25")!)!

    func withStack(_ body: (PostgresClient, OrderStore, CartBatcher, PersistStage) async throws -> Void) async throws {
        let topics = try Topics.load(path: TestSystem.repoRoot + "/topics.yaml")
        // A schema of its own: the outbox rows written here are no other test's relay's to send.
        try await IsolatedSchema.withStore("hand_offs", poolSize: 1) { store, client in
            let carts = CartBatcher(store: store)
            try await body(client, store, carts, PersistStage(store: store, carts: carts, topics: topics))
        }
    }

    /// Hand-offs `operation` cost on the pool's only connection.
    func handOffs(_ client: PostgresClient, _ operation: () async throws -> Void) async throws -> UInt64 {
        let before = try await client.withConnection { $0.handOffs }
        try await operation()
        let after = try await client.withConnection { $0.handOffs }
        return after - before
    }

    static func request(_ key: String, _ user: Int64, _ op: OrderStore.CartOperation) -> CartBatcher.Request {
        CartBatcher.Request(key: key, userId: user, operation: op) { change in
            guard case .changed(let cart) = change else { return RequestOutcome(action: nil, status: .ok, reply: Array("refused".utf8)) }
            return RequestOutcome(action: nil, status: .ok, reply: cart.json.bytes)
        }
    }

    @Test func aCartBatchIsOneHandOff() async throws {
        try await withStack { client, store, carts, _ in
            let users = (0..<3).map { _ in TestCatalog.uniqueUserId() }
            var outcomes: [CartBatcher.Outcome] = []
            let cost = try await handOffs(client) {
                outcomes = try await carts.commit(users.map { Self.request("hand-offs/\($0)", $0, .add(Self.product, quantity: 2)) })
            }
            #expect(cost == 1, "BEGIN, the batch, the replies, COMMIT (was 3 hand-offs)")
            #expect(outcomes.count == 3)
            for user in users { #expect(try await store.cart(userId: user).items.map(\.quantity) == [2]) }
        }
    }

    @Test func createOrderAndFinishOrderAreOneHandOffEach() async throws {
        try await withStack { client, store, carts, persist in
            let user = TestCatalog.uniqueUserId()
            _ = try await carts.commit([Self.request("hand-offs/add/\(user)", user, .add(Self.product, quantity: 3))])
            let checked = try await store.cart(userId: user)
            var result: PersistStage.Result?
            let create = try await handOffs(client) {
                result = try await persist.createOrder(
                    key: "hand-offs/order/\(user)", requestId: nil, userId: user, checked: checked,
                    products: [Self.product.productId: Self.product])
            }
            guard case .committed(_, wroteOutbox: true)? = result else {
                Issue.record("not committed: \(String(describing: result))")
                return
            }
            #expect(create == 1, "lock, read, insert, delete lines, outbox, reply, COMMIT (was 7 hand-offs)")
            let orders = try await store.orders(userId: user)
            #expect(orders.count == 1)
            #expect(try await store.cart(userId: user).items.isEmpty)
            let orderId = try #require(orders.first?.orderId)
            var moved = false
            let finish = try await handOffs(client) { moved = try await persist.finishOrder(orderId: orderId, status: .confirmed) }
            #expect(moved)
            #expect(finish == 1, "update, outbox, COMMIT (was 3 hand-offs)")
            let read = try await handOffs(client) { _ = try await store.orders(userId: user) }
            #expect(read == 1, "the orders and their lines (was 2 hand-offs)")
            #expect(try await store.orders(userId: user).first?.status == .confirmed)
        }
    }
}

extension StoreHandOffTests {
    /// Takes what is sent and says it was delivered.
    final class AcceptingSender: RecordSender {
        func send(_ record: KafkaOutgoingRecord) async throws -> DeliveryReport { DeliveryReport(topic: record.topic, partition: 0, offset: 0) }
    }

    @Test func anOutboxRelayBatchIsTwoHandOffsAndAnEmptyLookOne() async throws {
        try await IsolatedSchema.withStore("hand_offs", poolSize: 1) { store, client in
            let relay = OutboxRelay(store: store, producer: AcceptingSender(), logger: TestDatabase.logger)
            let records = (1...3).map { OrderStore.OutboxRecord(record: KafkaOutgoingRecord(topic: "t", key: nil, value: [UInt8($0)]), orderingKey: nil) }
            try await store.transaction { try await $0.enqueue(records) }
            var sent = 0
            let batch = try await handOffs(client) { sent = try await relay.relayBatch() }
            #expect(sent == 3)
            #expect(batch == 2, "BEGIN + lock; delete + COMMIT (was 3 hand-offs)")
            let empty = try await handOffs(client) { sent = try await relay.relayBatch() }
            #expect(sent == 0)
            #expect(empty == 1, "BEGIN + lock + COMMIT (was 2 hand-offs)")
            #expect(try await store.transaction { try await $0.lockOutbox(limit: 10) }.isEmpty, "deleted and committed")
            let state = try await client.withConnection { $0.isBroken }
            #expect(!state)
        }
    }
}

/// Network round trips of the same transactions once their statements are prepared: a COMMIT
/// rides with the transaction's last statement (`queryThenCommit`), one round trip fewer each.
extension StoreHandOffTests {
    /// Round trips `operation` cost on the pool's only connection.
    func roundTrips(_ client: PostgresClient, _ operation: () async throws -> Void) async throws -> UInt64 {
        let before = try await client.withConnection { $0.roundTrips }
        try await operation()
        let after = try await client.withConnection { $0.roundTrips }
        return after - before
    }

    @Test func theHotTransactionsCommitWithTheirLastStatement() async throws {
        try await withStack { client, store, carts, persist in
            let users = (0..<4).map { _ in TestCatalog.uniqueUserId() }
            // Each transaction once first, so that its statements are prepared (one round trip each).
            _ = try await carts.commit([Self.request("round-trips/add/\(users[0])", users[0], .add(Self.product, quantity: 1))])
            let batch = try await roundTrips(client) {
                _ = try await carts.commit(users[1...].map { Self.request("round-trips/add/\($0)", $0, .add(Self.product, quantity: 2)) })
            }
            #expect(batch == 2, "BEGIN + the batch; the replies + COMMIT (was 3)")
            var orderIds: [Int64] = []
            var creates: [UInt64] = []
            for user in users[0...1] {
                let checked = try await store.cart(userId: user)
                var result: PersistStage.Result?
                creates.append(try await roundTrips(client) {
                    result = try await persist.createOrder(
                        key: "round-trips/order/\(user)", requestId: nil, userId: user, checked: checked,
                        products: [Self.product.productId: Self.product])
                })
                guard case .committed(_, wroteOutbox: true)? = result else {
                    Issue.record("not committed: \(String(describing: result))")
                    return
                }
                orderIds.append(try #require(try await store.orders(userId: user).first?.orderId))
            }
            #expect(creates[1] == 2, "BEGIN + lock + read + ids; insert + delete lines + outbox + reply + COMMIT (was 7, then 6, then 3)")
            _ = try await store.order(orderId: orderIds[0], userId: users[0])  // its statement prepared
            let reads = try await roundTrips(client) {
                let orders = try await store.orders(userId: users[0])
                #expect(orders.count == 1 && orders.first?.items.count == 1, "\(orders)")
                let order = try await store.order(orderId: try #require(orders.first?.orderId), userId: users[0])
                #expect(order == orders.first)
            }
            #expect(reads == 2, "a page of orders with their lines, one order with its lines: one statement each (were two)")
            var finishes: [UInt64] = []
            for id in orderIds {
                var moved = false
                finishes.append(try await roundTrips(client) { moved = try await persist.finishOrder(orderId: id, status: .confirmed) })
                #expect(moved)
            }
            #expect(finishes[1] == 2, "BEGIN + update; outbox + COMMIT (was 3)")
            for (id, user) in zip(orderIds, users) { #expect(try await store.order(orderId: id, userId: user)?.status == .confirmed) }
            let relay = OutboxRelay(store: store, producer: AcceptingSender(), logger: TestDatabase.logger)
            var relayedFirst = 0
            while case let n = try await relay.relayBatch(), n > 0 { relayedFirst += n }
            #expect(relayedFirst == 6, "two orders' deductions, pending and confirmed notifications")
            let records = (1...3).map { OrderStore.OutboxRecord(record: KafkaOutgoingRecord(topic: "t", key: nil, value: [UInt8($0)]), orderingKey: nil) }
            try await store.transaction { try await $0.enqueue(records) }
            var sent = 0
            let relayed = try await roundTrips(client) { sent = try await relay.relayBatch() }
            #expect(sent == 3)
            #expect(relayed == 2, "BEGIN + lock; delete + COMMIT (was 4)")
            let empty = try await roundTrips(client) { sent = try await relay.relayBatch() }
            #expect(sent == 0)
            #expect(empty == 2, "BEGIN + lock; COMMIT (was 3)")
            #expect(try await store.transaction { try await $0.lockOutbox(limit: 10) }.isEmpty, "deleted and committed")
            #expect(!(try await client.withConnection { $0.isBroken }))
        }
    }

    @Test func aCreateOrderWhoseKeyIsStoredCommitsNothingAndAnswersTheStoredReply() async throws {
        try await withStack { client, store, carts, persist in
            let user = TestCatalog.uniqueUserId()
            _ = try await carts.commit([Self.request("duplicate/add/\(user)", user, .add(Self.product, quantity: 3))])
            let checked = try await store.cart(userId: user)
            let key = "duplicate/order/\(user)"
            let stored = Array("the first delivery's reply".utf8)
            #expect(try await store.storeReply(key: key, reply: stored))
            for _ in 0..<2 {  // prepared the first time, cached the second
                let result = try await persist.createOrder(
                    key: key, requestId: nil, userId: user, checked: checked, products: [Self.product.productId: Self.product])
                #expect(result == .alreadyProcessed(RequestOutcome(stored: stored)))
                #expect(try await store.orders(userId: user).isEmpty, "no order committed")
                #expect(try await store.cart(userId: user).items.map(\.quantity) == [3], "the cart untouched")
                #expect(try await store.transaction { try await $0.lockOutbox(limit: 10) }.isEmpty, "nothing queued")
            }
            #expect(try await store.storedReply(key: key) == stored)
            #expect(!(try await client.withConnection { $0.isBroken }))
        }
    }

    @Test func storedRepliesThatDoNotMatchTheirClaimsCommitNothing() async throws {
        try await withStack { client, store, _, _ in
            let claimed = "claims/\(TestCatalog.uniqueUserId())"
            let error = await #expect(throws: PersistFailure.self) {
                try await store.syncTransaction { tx in
                    try tx.storeReply(key: claimed, reply: [])  // claimed as `cartBatch` does
                    try tx.storeRepliesThenCommit([(claimed, [1]), ("claims/never-claimed", [2])])
                }
            }
            #expect("\(error.map { "\($0)" } ?? "")".contains("stored 1 of 2 batched replies"))
            #expect(try await store.storedReply(key: claimed) == nil, "rolled back: the claim is gone too")
            try await store.syncTransaction { tx in
                try tx.storeReply(key: claimed, reply: [])
                try tx.storeRepliesThenCommit([(claimed, [1])])
            }
            #expect(try await store.storedReply(key: claimed) == [1])
            #expect(!(try await client.withConnection { $0.isBroken }))
        }
    }
}

/// Deduction results ride with the cart batch: no round trip, transaction or WAL flush of their own.
extension StoreHandOffTests {
    /// An order of `StoreHandOffTests.product` for a new user, made through the persist stage.
    func placeOrder(_ carts: CartBatcher, _ store: OrderStore, _ persist: PersistStage) async throws -> (orderId: Int64, user: Int64) {
        let user = TestCatalog.uniqueUserId()
        _ = try await carts.commit([Self.request("finish/add/\(user)", user, .add(Self.product, quantity: 1))])
        let checked = try await store.cart(userId: user)
        let result = try await persist.createOrder(
            key: "finish/order/\(user)", requestId: nil, userId: user, checked: checked, products: [Self.product.productId: Self.product])
        guard case .committed = result else { throw PersistFailure.unexpected("not committed: \(result)") }
        return (try #require(try await store.orders(userId: user).first?.orderId), user)
    }

    static func finish(_ orderId: Int64, _ status: OrderStatus, _ topics: Topics) -> CartBatcher.Job {
        .finish(CartBatcher.Finish(orderId: orderId, status: status) { done in
            OutgoingMessages.notification(order: done.orderId, user: done.userId, status: status, total: done.total, at: done.at, topics: topics)
        })
    }

    /// The statuses of the queued notifications of `orderId`, in queue order (they stay queued:
    /// this schema has no relay).
    func notifiedStatuses(_ client: PostgresClient, _ orderId: Int64) async throws -> [String] {
        let rows = try await client.query("SELECT value FROM outbox WHERE ordering_key = $1 ORDER BY id", ["order/\(orderId)"]).rows
        return try rows.compactMap { row -> String? in
            guard case .string(let status)? = try JSON.parse(try row.decode(0, as: [UInt8].self))["status"] else { return nil }
            return status
        }
    }

    @Test func aDeductionResultRidesWithACartBatchInItsTwoRoundTrips() async throws {
        try await withStack { client, store, carts, persist in
            let first = try await placeOrder(carts, store, persist)
            let second = try await placeOrder(carts, store, persist)
            // Prepared first (one round trip each), as the cart batch's statements are.
            #expect(try await persist.finishOrder(orderId: first.orderId, status: .rejected))
            let other = TestCatalog.uniqueUserId()
            var outcomes: [CartBatcher.JobOutcome] = []
            let cost = try await roundTrips(client) {
                outcomes = try await carts.commit(jobs: [
                    .cart(Self.request("finish/other/\(other)", other, .add(Self.product, quantity: 4))), Self.finish(second.orderId, .confirmed, persist.topics),
                ])
            }
            #expect(cost == 2, "BEGIN + the cart batch + the order's move; its notification + the reply + COMMIT")
            guard outcomes.count == 2, case .cart(.stored) = outcomes[0], case .finished(moved: true) = outcomes[1] else {
                Issue.record("outcomes: \(outcomes)")
                return
            }
            #expect(try await store.cart(userId: other).items.map(\.quantity) == [4])
            #expect(try await store.order(orderId: second.orderId, userId: second.user)?.status == .confirmed)
            #expect(try await notifiedStatuses(client, second.orderId) == ["pending", "confirmed"])
            #expect(try await store.order(orderId: first.orderId, userId: first.user)?.status == .rejected)
            #expect(try await notifiedStatuses(client, first.orderId) == ["pending", "rejected"])
        }
    }

    @Test func aResultRepeatedInOneBatchMovesItsOrderOnceAsOneAfterTheOtherWould() async throws {
        try await withStack { client, store, carts, persist in
            let order = try await placeOrder(carts, store, persist)
            let outcomes = try await carts.commit(jobs: [
                Self.finish(order.orderId, .confirmed, persist.topics), Self.finish(order.orderId, .rejected, persist.topics),
                Self.finish(order.orderId, .confirmed, persist.topics), Self.finish(order.orderId + 1_000_000, .confirmed, persist.topics),
            ])
            let moved = outcomes.map { outcome -> Bool? in if case .finished(let m) = outcome { m } else { nil } }
            #expect(moved == [true, false, false, false], "the first moves it; the others find it confirmed; an unknown order moves nothing")
            #expect(try await store.order(orderId: order.orderId, userId: order.user)?.status == .confirmed)
            #expect(try await notifiedStatuses(client, order.orderId) == ["pending", "confirmed"])
            // A repeat in a later batch changes nothing either.
            #expect(try await !persist.finishOrder(orderId: order.orderId, status: .rejected))
            #expect(try await notifiedStatuses(client, order.orderId) == ["pending", "confirmed"])
        }
    }
}

/// The pipeline's reads ride with the cart batch too.
extension StoreHandOffTests {
    static func cartRead(_ store: OrderStore, _ user: Int64) -> CartBatcher.Job {
        .read(CartBatcher.Read(sql: OrderStore.cartSQL, params: [user]) { rows in try store.cart(userId: user, rows: rows, offset: 0) ?? .empty(userId: user) })
    }

    @Test func aReadRidesWithACartBatchAndReadsAloneAreOneRoundTrip() async throws {
        try await withStack { client, store, carts, persist in
            let order = try await placeOrder(carts, store, persist)
            let (reader, writer) = (TestCatalog.uniqueUserId(), TestCatalog.uniqueUserId())
            _ = try await carts.commit([Self.request("read/add/\(reader)", reader, .add(Self.product, quantity: 5))])
            // Every statement once first, so that each is prepared (one round trip each).
            _ = try await carts.commit(jobs: [Self.cartRead(store, reader)])
            _ = try await persist.orders(userId: order.user, beforeOrderId: nil, limit: 10)
            var outcomes: [CartBatcher.JobOutcome] = []
            let together = try await roundTrips(client) {
                outcomes = try await carts.commit(jobs: [
                    .cart(Self.request("read/writer/\(writer)", writer, .add(Self.product, quantity: 2))), Self.cartRead(store, reader),
                    Self.cartRead(store, writer),
                ])
            }
            #expect(together == 2, "BEGIN + the cart batch + the reads; the reply + COMMIT")
            guard outcomes.count == 3, case .cart(.stored) = outcomes[0], case .read(let r1) = outcomes[1], case .read(let r2) = outcomes[2],
                let readerCart = r1 as? Cart, let writerCart = r2 as? Cart
            else {
                Issue.record("outcomes: \(outcomes)")
                return
            }
            #expect(readerCart == (try await store.cart(userId: reader)))
            #expect(writerCart.items.map(\.quantity) == [2], "a read after a change in its batch sees it (both commit together)")
            var orders: [Order] = []
            let alone = try await roundTrips(client) { orders = try await persist.orders(userId: order.user, beforeOrderId: nil, limit: 10) }
            #expect(alone == 1, "reads alone: no transaction, no COMMIT")
            #expect(orders == (try await store.orders(userId: order.user)))
            #expect(try await persist.order(orderId: order.orderId, userId: order.user) == orders.first)
            #expect(try await persist.order(orderId: order.orderId, userId: order.user + 1) == nil, "another user's order is not found")
            #expect(try await persist.cart(userId: reader) == readerCart)
        }
    }
}

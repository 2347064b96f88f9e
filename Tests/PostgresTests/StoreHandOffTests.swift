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
        func sendAll(_ records: [KafkaOutgoingRecord]) async throws -> [DeliveryReport] {
            records.map { DeliveryReport(topic: $0.topic, partition: 0, offset: 0) }
        }
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

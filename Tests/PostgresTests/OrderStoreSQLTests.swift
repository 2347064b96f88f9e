import Foundation
import Kafka
import Postgres
import TestSupport
import Testing

@testable import OrderCore

/// The order, outbox and idempotency SQL of `OrderStore`, against the real server, each test in
/// a schema of its own.
@Suite("OrderStore SQL (PostgreSQL)", .timeLimit(.minutes(2)))
struct OrderStoreSQLTests {
    func product(_ id: Int64, _ name: String, _ price: String) throws -> Product {
        let amount = try #require(Money(price))
        return try #require(Product(productId: id, name: name, price: amount))
    }

    func money(_ text: String) throws -> Money { try #require(Money(text)) }

    /// Places an order of `lines` for `user` (total: the lines' sum).
    func place(_ store: OrderStore, user: Int64, _ lines: [(product: Product, quantity: Int)]) async throws -> Order {
        var total = Money.zero
        for l in lines {
            let line = try #require(l.product.price.times(l.quantity))
            total = try #require(total.adding(line))
        }
        let t = total
        return try await store.transaction { tx in try await tx.insertOrder(userId: user, lines: lines, total: t) }
    }

    // MARK: Idempotency expiry

    @Test func expireRepliesDeletesEntriesOlderThanTheRetentionAndKeepsNewerOnes() async throws {
        try await IsolatedSchema.withStore { store, db in
            let ages = ["old-2h": 7200, "old-61m": 3660, "new-59m": 3540, "new-now": 0]
            for (key, age) in ages {
                _ = try await db.query(
                    "INSERT INTO processed_requests (idempotency_key, reply, created_at) VALUES ($1, $2, now() - make_interval(secs => $3))",
                    [key, Array("reply \(key)".utf8), age])
            }
            #expect(try await store.expireReplies(olderThanSeconds: 3600) == 2)
            #expect(try await store.storedReply(key: "old-2h") == nil)
            #expect(try await store.storedReply(key: "old-61m") == nil)
            #expect(try await store.storedReply(key: "new-59m") == Array("reply new-59m".utf8))
            #expect(try await store.storedReply(key: "new-now") == Array("reply new-now".utf8))
            #expect(try await store.expireReplies(olderThanSeconds: 3600) == 0, "nothing left to expire")
            #expect(try await store.expireReplies(olderThanSeconds: 60) == 1)
            #expect(try await store.storedReply(key: "new-now") != nil)
        }
    }

    @Test func aStoredReplyIsKeptOnceAndAConflictSaysSo() async throws {
        try await IsolatedSchema.withStore { store in
            let first = try await store.storeReply(key: "k", reply: [1, 2])
            let again = try await store.storeReply(key: "k", reply: [3])
            let stored = try await store.storedReply(key: "k")
            #expect(first)
            #expect(!again)
            #expect(stored == [1, 2])
        }
    }

    // MARK: Orders

    @Test func insertOrderStoresEveryLineWithItsOwnIdAndTheTotal() async throws {
        try await IsolatedSchema.withStore { store, db in
            let user = TestCatalog.uniqueUserId()
            let lines = [
                (product: try product(30, #"Quote " and, comma {brace} \ back"#, "12.50"), quantity: 2),
                (product: try product(10, "Zürich – ☕", "0.00"), quantity: 1),
                (product: try product(20, "NULL", "99999999.99"), quantity: 3),
            ]
            let order = try await place(store, user: user, lines)
            #expect(order.status == .pending)
            #expect(order.userId == user)
            #expect(order.totalPrice == (try money("300000024.97")))
            #expect(order.items.map(\.orderItemId) == order.items.map(\.orderItemId).sorted())
            #expect(Set(order.items.map(\.orderItemId)).count == 3)
            for line in lines {
                let item = try #require(order.items.first { $0.productId == line.product.productId })
                #expect(item.productName == line.product.name)
                #expect(item.unitPrice == line.product.price)
                #expect(item.quantity == line.quantity)
            }
            // The ids are the stored rows' ids, matched by product.
            let rows = try await db.query(
                "SELECT order_item_id, product_id, product_name, unit_price::text, quantity FROM order_items WHERE order_id = $1", [order.orderId]
            ).rows
            #expect(rows.count == 3)
            for row in rows {
                let id: Int64 = try row.decode(0)
                let productId: Int64 = try row.decode(1)
                let item = try #require(order.items.first { $0.orderItemId == id })
                #expect(item.productId == productId)
                #expect(item.productName == (try row.decode(2) as String))
                #expect(item.unitPrice == Money(try row.decode(3) as String))
                #expect(item.quantity == (try row.decode(4) as Int))
            }
            #expect(try await store.order(orderId: order.orderId, userId: user) == order, "read back as written")
        }
    }

    @Test func finishOrderMovesOnlyAPendingOrderAndARepeatReturnsNil() async throws {
        try await IsolatedSchema.withStore { store in
            let user = TestCatalog.uniqueUserId()
            let order = try await place(store, user: user, [(try product(1, "a", "5.25"), 2)])
            let done = try await store.transaction { try await $0.finishOrder(orderId: order.orderId, status: .confirmed) }
            let finished = try #require(done)
            #expect(finished.userId == user)
            #expect(finished.total == (try money("10.50")))
            #expect(!finished.at.isEmpty)
            #expect(try await store.transaction { try await $0.finishOrder(orderId: order.orderId, status: .confirmed) } == nil)
            #expect(try await store.transaction { try await $0.finishOrder(orderId: order.orderId, status: .rejected) } == nil)
            #expect(try await store.order(orderId: order.orderId, userId: user)?.status == .confirmed)
            #expect(try await store.transaction { try await $0.finishOrder(orderId: order.orderId + 1_000, status: .rejected) } == nil)

            let other = try await place(store, user: user, [(try product(2, "b", "1.00"), 1)])
            #expect(try await store.transaction { try await $0.finishOrder(orderId: other.orderId, status: .rejected) } != nil)
            #expect(try await store.order(orderId: other.orderId, userId: user)?.status == .rejected)
        }
    }

    @Test func ordersAreListedNewestFirstBelowTheCursorUpToTheLimit() async throws {
        try await IsolatedSchema.withStore { store in
            let user = TestCatalog.uniqueUserId()
            let stranger = TestCatalog.uniqueUserId()
            var ids: [Int64] = []
            for i in 1...5 {
                ids.append(try await place(store, user: user, [(try product(Int64(i), "p\(i)", "\(i).00"), i)]).orderId)
                _ = try await place(store, user: stranger, [(try product(99, "x", "1.00"), 1)])
            }
            let all = try await store.orders(userId: user)
            #expect(all.map(\.orderId) == ids.reversed())
            #expect(all.allSatisfy { $0.userId == user })
            #expect(all.map { $0.items.map(\.productId) } == [[5], [4], [3], [2], [1]], "each order with its own lines")
            #expect(try await store.orders(userId: user, limit: 2).map(\.orderId) == [ids[4], ids[3]])
            #expect(try await store.orders(userId: user, beforeOrderId: ids[3], limit: 2).map(\.orderId) == [ids[2], ids[1]])
            #expect(try await store.orders(userId: user, beforeOrderId: ids[1]).map(\.orderId) == [ids[0]])
            #expect(try await store.orders(userId: user, beforeOrderId: ids[0]).isEmpty, "the cursor is exclusive")
            #expect(try await store.orders(userId: user, limit: 0).isEmpty)
            #expect(try await store.orders(userId: user, beforeOrderId: Int64.max, limit: 5).count == 5)
            #expect(try await store.orders(userId: TestCatalog.uniqueUserId()).isEmpty)
        }
    }

    @Test func anOrderOfAnotherUserIsNotFound() async throws {
        try await IsolatedSchema.withStore { store in
            let owner = TestCatalog.uniqueUserId()
            let order = try await place(store, user: owner, [(try product(7, "seven", "7.00"), 1)])
            #expect(try await store.order(orderId: order.orderId, userId: owner)?.orderId == order.orderId)
            #expect(try await store.order(orderId: order.orderId, userId: owner + 1) == nil)
            #expect(try await store.order(orderId: order.orderId + 1, userId: owner) == nil)
        }
    }

    // MARK: Outbox

    @Test func outboxRecordsRoundTripWithNilAndBinaryHeadersInOrder() async throws {
        try await IsolatedSchema.withStore { store in
            let binary: [UInt8] = [0, 255, 1, 128, 0x22, 0x5C, 0x7B]
            let records = [
                KafkaOutgoingRecord(
                    topic: "events", key: binary, value: [0, 1, 2, 0xFF, 0],
                    headers: [
                        KafkaHeader("text", "value, \"quoted\""), KafkaHeader(key: "none", value: nil), KafkaHeader(key: "bin", value: binary),
                        KafkaHeader(key: "empty", value: []), KafkaHeader("dup", "1"), KafkaHeader("dup", "2"),
                    ]),
                KafkaOutgoingRecord(topic: "replies", key: nil, value: Array(#"{"a":1}"#.utf8), headers: []),
                KafkaOutgoingRecord(topic: "events", key: Array("k".utf8), value: [], headers: [KafkaHeader(key: "only-nil", value: nil)]),
            ]
            try await store.transaction { tx in
                try await tx.enqueue(records.map { OrderStore.OutboxRecord(record: $0, orderingKey: nil) })
            }
            let taken = try await store.transaction { tx in
                let taken = try await tx.lockOutbox(limit: 10)
                try await tx.deleteOutbox(ids: taken.map(\.id))
                return taken
            }
            #expect(taken.map(\.id) == taken.map(\.id).sorted())
            try #require(taken.count == records.count)
            for (got, sent) in zip(taken.map(\.record), records) {
                #expect(got.topic == sent.topic)
                #expect(got.key == sent.key)
                #expect(got.value == sent.value)
                #expect(got.headers == sent.headers)
            }
            #expect(try await store.transaction { try await $0.lockOutbox(limit: 10) }.isEmpty, "deleted")
        }
    }

    @Test func lockOutboxTakesAtMostTheLimitOldestFirstAndDeleteOutboxOnlyTheGivenIds() async throws {
        try await IsolatedSchema.withStore { store in
            let records = (1...5).map { OrderStore.OutboxRecord(record: KafkaOutgoingRecord(topic: "t", key: nil, value: [UInt8($0)]), orderingKey: nil) }
            try await store.transaction { try await $0.enqueue(records) }
            try await store.transaction { try await $0.enqueue([]) }  // nothing, no error
            let first = try await store.transaction { tx in
                let t = try await tx.lockOutbox(limit: 2)
                try await tx.deleteOutbox(ids: t.map(\.id))
                return t
            }
            #expect(first.map(\.record.value) == [[1], [2]])
            let rest = try await store.transaction { try await $0.lockOutbox(limit: 10) }
            #expect(rest.map(\.record.value) == [[3], [4], [5]])
            try await store.transaction { try await $0.deleteOutbox(ids: []) }
            #expect(try await store.transaction { try await $0.lockOutbox(limit: 10) }.count == 3)
        }
    }
}

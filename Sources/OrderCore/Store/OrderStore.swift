import Foundation
import Kafka
import Postgres

/// All SQL of the order domain. Every value is a bound parameter. The store opens and ends every
/// transaction itself (`transaction`, `OrderStore+Transaction.swift`); callers never hold a
/// connection.
public struct OrderStore: Sendable {
    private let db: PostgresClient

    public init(db: PostgresClient) { self.db = db }

    /// Runs `body` in one transaction: committed when it returns, rolled back when it throws
    /// (a connection lost or the database down included; the error is rethrown).
    public func transaction<T: Sendable>(_ body: (Transaction) async throws -> T) async throws -> T {
        try await db.transaction { conn in try await body(Transaction(store: self, conn: conn)) }
    }

    // MARK: Idempotency

    public func storedReply(key: String) async throws -> [UInt8]? {
        let r = try await db.query("SELECT reply FROM processed_requests WHERE idempotency_key = $1", [key])
        return try r.rows.first?.decode(0, as: [UInt8].self)
    }

    /// Remembers a reply outside any transaction (a read's reply, a refusal); false when the key
    /// was stored meanwhile (by a concurrent redelivery).
    @discardableResult
    public func storeReply(key: String, reply: [UInt8]) async throws -> Bool {
        try await db.withConnection { conn in try await Transaction(store: self, conn: conn).storeReply(key: key, reply: reply) }
    }

    /// Deletes idempotency entries older than `olderThanSeconds`; returns how many.
    public func expireReplies(olderThanSeconds: Int) async throws -> Int {
        let r = try await db.query(
            "DELETE FROM processed_requests WHERE created_at < now() - make_interval(secs => $1)", [olderThanSeconds])
        return r.affectedRows
    }

    // MARK: Carts

    /// The user's cart with its lines, in one query.
    public func cart(userId: Int64) async throws -> Cart {
        let rows = try await db.query(Self.cartSQL, [userId]).rows
        return try cart(userId: userId, rows: rows, offset: 0) ?? .empty(userId: userId)
    }

    /// A user's cart and its lines ($1: the user id), shaped for `cart(userId:rows:offset:)`.
    static let cartSQL = """
        SELECT c.cart_id, \(timestampSQL("c.created_at")), i.cart_item_id, i.product_id, i.product_name, i.unit_price::text, i.quantity
        FROM carts c LEFT JOIN cart_items i ON i.cart_id = c.cart_id WHERE c.user_id = $1 ORDER BY i.cart_item_id
        """

    /// Builds a cart from rows shaped (cart_id, created_at, cart_item_id, product_id, product_name,
    /// unit_price, quantity) starting at column `offset`; nil when there are no rows.
    func cart(userId: Int64, rows: [PostgresRow], offset o: Int) throws -> Cart? {
        guard let first = rows.first, !first.isNull(o) else { return nil }
        var items: [CartItem] = []
        for row in rows where !row.isNull(o + 2) {
            items.append(try CartItem(
                cartItemId: try row.decode(o + 2), productId: try row.decode(o + 3), productName: try row.decode(o + 4),
                unitPrice: try money(row, o + 5), quantity: try row.decode(o + 6)))
        }
        return try Cart(cartId: try first.decode(o), userId: userId, createdAt: try first.decode(o + 1), items: items)
    }

    public enum CartChange: Sendable, Equatable {
        case changed(Cart)
        case tooMany(current: Int)
        case cartFull
        case notFound
        /// The change would take a line or the cart total above `Money.max`; nothing changed.
        case overTotal
    }

    /// Reads the rows of the cart functions, whose columns start at `offset`.
    func cartChange(userId: Int64, rows: [PostgresRow], offset o: Int) throws -> CartChange {
        guard let first = rows.first else { throw PersistFailure.unexpected("cart function returned nothing") }
        switch try first.decode(o, as: String.self) {
        case "ok": return .changed(try cart(userId: userId, rows: rows, offset: o + 2) ?? .empty(userId: userId))
        case "too_many": return .tooMany(current: try first.decode(o + 1))
        case "cart_full": return .cartFull
        case "over_total": return .overTotal
        default: return .notFound
        }
    }

    /// One cart request of a batch (see `CartBatcher`).
    public enum CartOperation: Sendable, Equatable {
        case add(Product, quantity: Int)
        /// update_item; quantity 0 is remove_item.
        case set(productId: Int64, quantity: Int)
        case get
    }

    /// What a batched cart request found: its change or read, or `nil` when its idempotency key
    /// was stored before (a redelivery processed elsewhere).
    typealias CartBatchOutcome = CartChange?

    /// Carts by cart_id ascending after `afterCartId`, at most `limit`, and whether more follow.
    /// One query for the page and all its lines.
    public func carts(limit: Int, afterCartId: Int64?) async throws -> (carts: [Cart], more: Bool) {
        let rows = try await db.query(
            """
            SELECT c.user_id, c.cart_id, \(timestampSQL("c.created_at")), i.cart_item_id, i.product_id, i.product_name, i.unit_price::text, i.quantity
            FROM (SELECT cart_id, user_id, created_at FROM carts WHERE cart_id > $1 ORDER BY cart_id LIMIT $2) c
            LEFT JOIN cart_items i ON i.cart_id = c.cart_id ORDER BY c.cart_id, i.cart_item_id
            """,
            [afterCartId ?? 0, limit + 1]
        ).rows
        var carts: [Cart] = []
        var start = 0
        while start < rows.count {
            let id: Int64 = try rows[start].decode(1)
            var end = start + 1
            while end < rows.count, try rows[end].decode(1, as: Int64.self) == id { end += 1 }
            if let cart = try cart(userId: try rows[start].decode(0), rows: Array(rows[start..<end]), offset: 1) { carts.append(cart) }
            start = end
        }
        return (Array(carts.prefix(limit)), carts.count > limit)
    }

    // MARK: Orders

    /// The user's orders with ids below `beforeOrderId` (all when nil), newest first, at most `limit`.
    public func orders(userId: Int64, beforeOrderId: Int64? = nil, limit: Int = Int(Int32.max)) async throws -> [Order] {
        try await db.withConnection { conn in
            let rows = try await conn.query(
                """
                SELECT order_id, status, total_price::text, \(timestampSQL("created_at")) FROM orders
                WHERE user_id = $1 AND order_id < $2 ORDER BY order_id DESC LIMIT $3
                """,
                [userId, beforeOrderId ?? Int64.max, Int64(limit)]
            ).rows
            let ids: [Int64] = try rows.map { try $0.decode(0) }
            let items = try await orderItems(orderIds: ids, on: conn)
            return try rows.map { row in
                let id: Int64 = try row.decode(0)
                return Order(
                    orderId: id, userId: userId, status: try status(row, 1),
                    totalPrice: try money(row, 2), createdAt: try row.decode(3), items: items[id] ?? [])
            }
        }
    }

    public func order(orderId: Int64, userId: Int64) async throws -> Order? {
        try await db.withConnection { conn in
            let rows = try await conn.query(
                "SELECT status, total_price::text, \(timestampSQL("created_at")) FROM orders WHERE order_id = $1 AND user_id = $2",
                [orderId, userId]
            ).rows
            guard let row = rows.first else { return nil }
            let items = try await orderItems(orderIds: [orderId], on: conn)
            return Order(
                orderId: orderId, userId: userId, status: try status(row, 0),
                totalPrice: try money(row, 1), createdAt: try row.decode(2), items: items[orderId] ?? [])
        }
    }

    private func orderItems(orderIds: [Int64], on conn: PostgresConnection) async throws -> [Int64: [OrderItem]] {
        guard !orderIds.isEmpty else { return [:] }
        // One query for all orders (no N+1); the id list is a bound array parameter.
        let list = "{" + orderIds.map(String.init).joined(separator: ",") + "}"
        let rows = try await conn.query(
            "SELECT order_id, order_item_id, product_id, product_name, unit_price::text, quantity FROM order_items WHERE order_id = ANY($1::bigint[]) ORDER BY order_item_id",
            [list]
        ).rows
        var out: [Int64: [OrderItem]] = [:]
        for row in rows {
            out[try row.decode(0), default: []].append(
                try OrderItem(
                    orderItemId: try row.decode(1), productId: try row.decode(2), productName: try row.decode(3),
                    unitPrice: try money(row, 4), quantity: try row.decode(5)))
        }
        return out
    }

    // MARK: Outbox

    /// A record for the outbox. Records with the same `orderingKey` are sent in the order they
    /// were queued, one after another, whatever instance relays them.
    struct OutboxRecord: Sendable {
        var record: KafkaOutgoingRecord
        var orderingKey: String?
    }

    public struct OutboxEntry: Sendable {
        public var id: Int64
        public var record: KafkaOutgoingRecord
    }

    // MARK: helpers

    private func status(_ row: PostgresRow, _ index: Int) throws -> OrderStatus {
        guard let s = OrderStatus(rawValue: try row.decode(index)) else { throw PersistFailure.unexpected("bad order status in column \(index)") }
        return s
    }

    func money(_ row: PostgresRow, _ index: Int) throws -> Money {
        let text: String = try row.decode(index)
        guard let m = Money(text) else { throw PersistFailure.unexpected("bad money value in column \(index)") }
        return m
    }
}

/// A failure inside the persistence layer that is not the client's fault.
enum PersistFailure: Error, CustomStringConvertible {
    case unexpected(String)
    var description: String {
        switch self { case .unexpected(let s): s }
    }
}

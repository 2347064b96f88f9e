import Foundation
import Kafka
import Postgres

/// All SQL of the order domain. Every value is a bound parameter. The store opens and ends every
/// transaction itself (`transaction`, `OrderStore+Transaction.swift`); callers never hold a
/// connection.
public struct OrderStore: Sendable {
    private let db: PostgresClient

    public init(db: PostgresClient) { self.db = db }

    /// Runs `body` in one transaction in a single hand-off to a connection's queue: BEGIN, its
    /// statements and COMMIT run there synchronously, one after another. Committed when it returns,
    /// rolled back when it throws (a connection lost or the database down included; the error is
    /// rethrown). `body` does nothing but SQL and computation: it runs on the connection's queue,
    /// with the task's trace context bound there again (outbox records' headers continue it).
    public func syncTransaction<T: Sendable>(_ body: @escaping @Sendable (SyncTransaction) throws -> T) async throws -> T {
        let store = self
        let trace = CarriedTraceContext()
        return try await db.transactionOnQueue { conn in try trace.bind { try body(SyncTransaction(store: store, conn: conn)) } }
    }

    /// Runs `body` on one connection's queue outside a transaction (reads: each statement sees
    /// what committed before it; a `pipeline` is one round trip).
    func syncRead<T: Sendable>(_ body: @escaping @Sendable (SyncTransaction) throws -> T) async throws -> T {
        let store = self
        return try await db.onQueue { conn in try body(SyncTransaction(store: store, conn: conn)) }
    }

    /// Runs `body` in one transaction that may suspend in between (the outbox relay sends to Kafka
    /// while its rows stay locked); each statement is a hand-off of its own. Committed when it
    /// returns, rolled back when it throws (a connection lost or the database down included; the
    /// error is rethrown). Prefer `syncTransaction` when `body` does nothing but SQL.
    public func transaction<T: Sendable>(_ body: (Transaction) async throws -> T) async throws -> T {
        try await db.transaction { conn in try await body(Transaction(store: self, conn: conn)) }
    }

    // MARK: Idempotency

    public func storedReply(key: String) async throws -> [UInt8]? {
        let r = try await db.query("SELECT reply FROM processed_requests WHERE idempotency_key = $1", [key])
        return try r.rows.first?.decode(0, as: [UInt8].self)
    }

    /// Remembers a reply outside any transaction; false when the key was stored meanwhile (by a
    /// concurrent redelivery). The service remembers reads and refusals with the cart batch
    /// instead (`PersistStage.remember`); this is for tools and tests.
    @discardableResult
    public func storeReply(key: String, reply: [UInt8]) async throws -> Bool {
        try await db.query(Self.storeReplySQL, [key, reply]).affectedRows == 1
    }

    static let storeReplySQL = "INSERT INTO processed_requests (idempotency_key, reply) VALUES ($1, $2) ON CONFLICT DO NOTHING"

    /// Fills in claimed keys' replies ($1 keys, $2 replies, $3 how many) and fails, with a message
    /// naming both counts, unless exactly $3 rows were updated (see `storeRepliesThenCommit`).
    static let storeRepliesSQL = """
        WITH stored AS (
            UPDATE processed_requests p SET reply = v.reply FROM unnest($1::text[], $2::bytea[]) AS v(key, reply)
            WHERE p.idempotency_key = v.key RETURNING 1
        )
        SELECT CASE WHEN c.n = $3::bigint THEN c.n ELSE ('stored ' || c.n || ' of ' || $3::bigint || ' batched replies')::bigint END
        FROM (SELECT count(*) AS n FROM stored) c
        """

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
        /// No cart is read or changed: only the request's key is claimed, so that a reply decided
        /// before the store (an error, a list_orders page) is stored with the batch instead of in a
        /// round trip of its own. Found: `.changed` with an empty cart, which the reply ignores.
        case claim
    }

    /// What a batched cart request found: its change or read, or `nil` when its idempotency key
    /// was stored before (a redelivery processed elsewhere).
    typealias CartBatchOutcome = CartChange?

    /// Carts by cart_id ascending after `afterCartId`, at most `limit`, and whether more follow.
    /// One query for the page and all its lines.
    public func carts(limit: Int, afterCartId: Int64?) async throws -> (carts: [Cart], more: Bool) {
        let rows = try await db.query(Self.cartsSQL, [afterCartId ?? 0, limit + 1]).rows
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

    static let cartsSQL = """
        SELECT c.user_id, c.cart_id, \(timestampSQL("c.created_at")), i.cart_item_id, i.product_id, i.product_name, i.unit_price::text, i.quantity
        FROM (SELECT cart_id, user_id, created_at FROM carts WHERE cart_id > $1 ORDER BY cart_id LIMIT $2) c
        LEFT JOIN cart_items i ON i.cart_id = c.cart_id ORDER BY c.cart_id, i.cart_item_id
        """

    // MARK: Orders

    /// The user's orders with ids below `beforeOrderId` (all when nil), newest first, at most `limit`,
    /// each with its lines: one statement (one snapshot, one round trip).
    public func orders(userId: Int64, beforeOrderId: Int64? = nil, limit: Int = Int(Int32.max)) async throws -> [Order] {
        let store = self
        return try await db.onQueue { conn in
            try store.ordersWithItems(userId: userId, rows: try conn.query(Self.ordersSQL, [userId, beforeOrderId ?? Int64.max, Int64(limit)]).rows)
        }
    }

    /// Orders (columns 0–3) joined with their lines (4–8), ordered by order and line.
    static let ordersSQL = """
        SELECT o.order_id, o.status, o.total_price::text, \(timestampSQL("o.created_at")),
               i.order_item_id, i.product_id, i.product_name, i.unit_price::text, i.quantity
        FROM (SELECT order_id, status, total_price, created_at FROM orders
              WHERE user_id = $1 AND order_id < $2 ORDER BY order_id DESC LIMIT $3) o
        LEFT JOIN order_items i ON i.order_id = o.order_id
        ORDER BY o.order_id DESC, i.order_item_id
        """

    public func order(orderId: Int64, userId: Int64) async throws -> Order? {
        let store = self
        return try await db.onQueue { conn in
            try store.ordersWithItems(userId: userId, rows: try conn.query(Self.orderSQL, [orderId, userId]).rows).first
        }
    }

    static let orderSQL = """
        SELECT o.order_id, o.status, o.total_price::text, \(timestampSQL("o.created_at")),
               i.order_item_id, i.product_id, i.product_name, i.unit_price::text, i.quantity
        FROM orders o LEFT JOIN order_items i ON i.order_id = o.order_id
        WHERE o.order_id = $1 AND o.user_id = $2
        ORDER BY i.order_item_id
        """

    /// Orders from rows of `ordersSQL`'s shape, in row order; an order without lines has one row
    /// with NULL line columns.
    func ordersWithItems(userId: Int64, rows: [PostgresRow]) throws -> [Order] {
        var orders: [Order] = []
        for row in rows {
            let id: Int64 = try row.decode(0)
            if orders.last?.orderId != id {
                orders.append(
                    Order(
                        orderId: id, userId: userId, status: try status(row, 1), totalPrice: try money(row, 2),
                        createdAt: try row.decode(3), items: []))
            }
            guard let itemId = try row.decode(4, as: Int64?.self) else { continue }
            orders[orders.count - 1].items.append(
                try OrderItem(
                    orderItemId: itemId, productId: try row.decode(5), productName: try row.decode(6),
                    unitPrice: try money(row, 7), quantity: try row.decode(8)))
        }
        return orders
    }

    /// The order and its lines ($1 user, $2 total, $3… the lines' columns); returns the order's id
    /// and time and each line's id and product.
    /// The ids and creation time of an order about to be made, taken before its insert (see
    /// `SyncTransaction.lockCartForOrder`).
    struct OrderIds: Sendable {
        var orderId: Int64
        var createdAt: String
        /// One per line, ascending.
        var lineIds: [Int64]
    }

    /// A new order's id and the transaction's time (the orders' `created_at` default, the same
    /// `now()` for every statement of the transaction).
    static let orderIdSQL = "SELECT nextval('orders_order_id_seq'::regclass), \(timestampSQL("now()"))"

    /// One new order line id per line of the user's cart ($1).
    static let orderLineIdsSQL = """
        SELECT nextval('order_items_order_item_id_seq'::regclass)
        FROM carts c JOIN cart_items i ON i.cart_id = c.cart_id WHERE c.user_id = $1
        """

    /// `$1` new order line ids.
    static let newLineIdsSQL = "SELECT nextval('order_items_order_item_id_seq'::regclass) FROM generate_series(1, $1::integer)"

    /// The order ($1 id, $2 user, $3 total) and its lines ($4 ids, $5 products, $6 names, $7 prices,
    /// $8 quantities), with the ids taken before; `created_at` is the transaction's `now()`.
    static let insertOrderSQL = """
        WITH o AS (
            INSERT INTO orders (order_id, user_id, status, total_price) VALUES ($1, $2, 'pending', $3::numeric) RETURNING order_id
        )
        INSERT INTO order_items (order_item_id, order_id, product_id, product_name, unit_price, quantity)
        SELECT v.id, o.order_id, v.product_id, v.name, v.price, v.quantity
        FROM o, unnest($4::bigint[], $5::bigint[], $6::text[], $7::numeric[], $8::integer[]) AS v(id, product_id, name, price, quantity)
        """

    /// An order moved from pending by a deduction result.
    public struct FinishedOrder: Sendable, Equatable {
        public var orderId: Int64
        public var userId: Int64
        public var total: Money
        /// When it moved (the transaction's time).
        public var at: String
    }

    /// Moves the pending ones of the orders ($1 ids, each once) to their statuses ($2).
    static let finishOrdersSQL = """
        UPDATE orders o SET status = v.status FROM unnest($1::bigint[], $2::text[]) AS v(order_id, status)
        WHERE o.order_id = v.order_id AND o.status = 'pending'
        RETURNING o.order_id, o.user_id, o.total_price::text, \(timestampSQL("now()"))
        """

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

    func status(_ row: PostgresRow, _ index: Int) throws -> OrderStatus {
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

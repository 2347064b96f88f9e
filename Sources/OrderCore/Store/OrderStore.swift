import Foundation
import Kafka
import Postgres

/// All SQL of the order domain. Every value is a bound parameter.
public struct OrderStore: Sendable {
    public let db: PostgresClient

    public init(db: PostgresClient) { self.db = db }

    // MARK: Idempotency

    public func storedReply(key: String) async throws -> [UInt8]? {
        let r = try await db.query("SELECT reply FROM processed_requests WHERE idempotency_key = $1", [key])
        return try r.rows.first?.decode(0, as: [UInt8].self)
    }

    /// Remembers a reply; false when the key was stored meanwhile (by a concurrent redelivery).
    @discardableResult
    public func storeReply(_ conn: PostgresConnection, key: String, reply: [UInt8]) async throws -> Bool {
        let r = try await conn.query(
            "INSERT INTO processed_requests (idempotency_key, reply) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            [key, reply])
        return r.affectedRows == 1
    }

    /// Deletes idempotency entries older than `olderThanSeconds`; returns how many.
    public func expireReplies(olderThanSeconds: Int) async throws -> Int {
        let r = try await db.query(
            "DELETE FROM processed_requests WHERE created_at < now() - make_interval(secs => $1)", [olderThanSeconds])
        return r.affectedRows
    }

    // MARK: Carts

    /// The user's cart with its lines, in one query.
    public func cart(userId: Int64, on conn: PostgresConnection? = nil) async throws -> Cart {
        let rows = try await run(
            conn,
            """
            SELECT c.cart_id, \(timestampSQL("c.created_at")), i.cart_item_id, i.product_id, i.product_name, i.unit_price::text, i.quantity
            FROM carts c LEFT JOIN cart_items i ON i.cart_id = c.cart_id WHERE c.user_id = $1 ORDER BY i.cart_item_id
            """, [userId]
        ).rows
        return try cart(userId: userId, rows: rows, offset: 0) ?? .empty(userId: userId)
    }

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
    private func cartChange(userId: Int64, rows: [PostgresRow], offset o: Int) throws -> CartChange {
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

    /// Runs the cart requests `(key, user, operation)` in one statement on `conn` (inside the
    /// caller's transaction); claims each key with a placeholder that `storeReplies` fills in.
    func cartBatch(_ requests: [(key: String, userId: Int64, operation: CartOperation)], on conn: PostgresConnection) async throws -> [CartBatchOutcome] {
        var ops: [String?] = [], products: [String?] = [], names: [String?] = [], prices: [String?] = [], quantities: [String?] = []
        for r in requests {
            switch r.operation {
            case .add(let p, let q):
                ops.append("add"); products.append(String(p.productId)); names.append(p.name)
                prices.append(p.price.description); quantities.append(String(q))
            case .set(let id, let q):
                ops.append("set"); products.append(String(id)); names.append(nil); prices.append(nil); quantities.append(String(q))
            case .get:
                ops.append("get"); products.append(nil); names.append(nil); prices.append(nil); quantities.append(nil)
            }
        }
        let rows = try await conn.query(
            "SELECT * FROM order_service_cart_batch($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::numeric[], $7::integer[], $8, $9)",
            [
                PostgresArrayLiteral(requests.map { Optional($0.key) }), PostgresArrayLiteral(ops),
                PostgresArrayLiteral(requests.map(\.userId)), PostgresArrayLiteral(products), PostgresArrayLiteral(names),
                PostgresArrayLiteral(prices), PostgresArrayLiteral(quantities), Limits.maxQuantity, Limits.maxCartLines,
            ]
        ).rows
        // Rows come grouped by index, in order; split them and read each group like the
        // single-request functions' rows (one column further right).
        var groups = [[PostgresRow]](repeating: [], count: requests.count)
        for row in rows {
            let index: Int = try row.decode(0)
            guard index >= 1, index <= requests.count else { throw PersistFailure.unexpected("cart batch returned index \(index)") }
            groups[index - 1].append(row)
        }
        return try groups.enumerated().map { i, group in
            guard let first = group.first else { throw PersistFailure.unexpected("cart batch returned nothing for request \(i + 1)") }
            if try first.decode(1, as: String.self) == "duplicate" { return nil }
            return try cartChange(userId: requests[i].userId, rows: group, offset: 1)
        }
    }

    /// Fills in the replies of keys claimed by `cartBatch`, in the same transaction.
    func storeReplies(_ replies: [(key: String, reply: [UInt8])], on conn: PostgresConnection) async throws {
        guard !replies.isEmpty else { return }
        let r = try await conn.query(
            "UPDATE processed_requests p SET reply = v.reply FROM unnest($1::text[], $2::bytea[]) AS v(key, reply) WHERE p.idempotency_key = v.key",
            [PostgresArrayLiteral(replies.map { Optional($0.key) }), PostgresArrayLiteral(bytea: replies.map(\.reply))])
        guard r.affectedRows == replies.count else {
            throw PersistFailure.unexpected("stored \(r.affectedRows) of \(replies.count) batched replies")
        }
    }

    /// The user's cart with its lines, its row locked until the transaction ends; nil when the
    /// user has none. Two statements on purpose: under READ COMMITTED a join locked `FOR UPDATE
    /// OF c` may return the lines of the snapshot taken before waiting for the lock; the second
    /// statement reads the lines as committed by whoever held the lock (every cart change takes
    /// the cart row's lock first).
    func lockCart(userId: Int64, on conn: PostgresConnection) async throws -> Cart? {
        let locked = try await conn.query("SELECT cart_id FROM carts WHERE user_id = $1 FOR UPDATE", [userId]).rows
        guard !locked.isEmpty else { return nil }
        return try await cart(userId: userId, on: conn)
    }

    /// Takes these lines out of the cart (lines added meanwhile stay).
    func deleteLines(cartId: Int64, lineIds: [Int64], on conn: PostgresConnection) async throws {
        _ = try await conn.query(
            "DELETE FROM cart_items WHERE cart_id = $1 AND cart_item_id = ANY($2::bigint[])", [cartId, PostgresArrayLiteral(lineIds)])
    }

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

    /// Inserts the order and all its lines with one statement. A cart holds each product once,
    /// so the returned line ids are matched to lines by product. `total` is the lines' checked sum.
    func insertOrder(userId: Int64, lines: [(product: Product, quantity: Int)], total: Money, on conn: PostgresConnection) async throws -> Order {
        let rows = try await conn.query(
            """
            WITH o AS (
                INSERT INTO orders (user_id, status, total_price) VALUES ($1, 'pending', $2::numeric) RETURNING order_id, created_at
            ), i AS (
                INSERT INTO order_items (order_id, product_id, product_name, unit_price, quantity)
                SELECT o.order_id, v.product_id, v.name, v.price, v.quantity
                FROM o, unnest($3::bigint[], $4::text[], $5::numeric[], $6::integer[]) WITH ORDINALITY AS v(product_id, name, price, quantity, n)
                ORDER BY v.n RETURNING order_item_id, product_id
            )
            SELECT o.order_id, \(timestampSQL("o.created_at")), i.order_item_id, i.product_id FROM o, i
            """,
            [
                userId, total.description,
                PostgresArrayLiteral(lines.map(\.product.productId)), PostgresArrayLiteral(lines.map { Optional($0.product.name) }),
                PostgresArrayLiteral(lines.map { Optional($0.product.price.description) }), PostgresArrayLiteral(lines.map(\.quantity)),
            ]
        ).rows
        guard let first = rows.first, rows.count == lines.count else {
            throw PersistFailure.unexpected("order insert: \(rows.count) rows for \(lines.count) lines")
        }
        var itemIds: [Int64: Int64] = [:]
        for row in rows { itemIds[try row.decode(3)] = try row.decode(2) }
        let items = try lines.map { line in
            guard let id = itemIds[line.product.productId] else { throw PersistFailure.unexpected("order line of product \(line.product.productId) missing") }
            return try OrderItem(orderItemId: id, productId: line.product.productId, productName: line.product.name, unitPrice: line.product.price, quantity: line.quantity)
        }.sorted { $0.orderItemId < $1.orderItemId }
        return Order(orderId: try first.decode(0), userId: userId, status: .pending, totalPrice: total, createdAt: try first.decode(1), items: items)
    }

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

    func orderItems(orderIds: [Int64], on conn: PostgresConnection) async throws -> [Int64: [OrderItem]] {
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

    /// Moves a pending order to its final status; nil when it is not pending (repeat or late result).
    func finishOrder(orderId: Int64, status: OrderStatus, on conn: PostgresConnection) async throws -> (userId: Int64, total: Money, at: String)? {
        let rows = try await conn.query(
            "UPDATE orders SET status = $2 WHERE order_id = $1 AND status = 'pending' RETURNING user_id, total_price::text, \(timestampSQL("now()"))",
            [orderId, status.rawValue]
        ).rows
        guard let row = rows.first else { return nil }
        return (try row.decode(0), try money(row, 1), try row.decode(2))
    }

    // MARK: Outbox

    /// A record for the outbox. Records with the same `orderingKey` are sent in the order they
    /// were queued, one after another, whatever instance relays them.
    struct OutboxRecord: Sendable {
        var record: KafkaOutgoingRecord
        var orderingKey: String?
    }

    /// Queues records in the outbox, in order, with one statement.
    func enqueue(_ queued: [OutboxRecord], on conn: PostgresConnection) async throws {
        let records = queued.map(\.record)
        guard !records.isEmpty else { return }
        let headers = records.map { record in
            JSON.array(record.headers.map { h in
                .object([("k", .string(h.key)), ("v", h.value.map { .string(Data($0).base64EncodedString()) } ?? .null)])
            }).bytes
        }
        _ = try await conn.query(
            """
            INSERT INTO outbox (topic, key, value, headers, ordering_key)
            SELECT v.topic, v.key, v.value, v.headers, v.ordering_key
            FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::bytea[], $5::text[]) WITH ORDINALITY AS v(topic, key, value, headers, ordering_key, n)
            ORDER BY v.n
            """,
            [
                PostgresArrayLiteral(records.map { Optional($0.topic) }), PostgresArrayLiteral(bytea: records.map(\.key)),
                PostgresArrayLiteral(bytea: records.map { $0.value ?? [] }), PostgresArrayLiteral(bytea: headers),
                PostgresArrayLiteral(queued.map(\.orderingKey)),
            ])
    }

    public struct OutboxEntry: Sendable {
        public var id: Int64
        public var record: KafkaOutgoingRecord
    }

    /// Oldest unsent outbox records, locked so that another instance skips them. A row whose
    /// ordering key has an older row left (being sent by someone, or not yet) waits for it.
    func lockOutbox(limit: Int, on conn: PostgresConnection) async throws -> [OutboxEntry] {
        let rows = try await conn.query(
            """
            SELECT o.id, o.topic, o.key, o.value, o.headers FROM outbox o
            WHERE o.ordering_key IS NULL
               OR NOT EXISTS (SELECT 1 FROM outbox p WHERE p.ordering_key = o.ordering_key AND p.id < o.id)
            ORDER BY o.id LIMIT $1 FOR UPDATE OF o SKIP LOCKED
            """, [limit]
        ).rows
        return try rows.map { row in
            var headers: [KafkaHeader] = []
            if case .array(let items)? = try? JSON.parse(try row.decode(4, as: [UInt8].self)) {
                for item in items {
                    guard case .string(let k)? = item["k"] else { continue }
                    var value: [UInt8]?
                    if case .string(let v)? = item["v"], let d = Data(base64Encoded: v) { value = Array(d) }
                    headers.append(KafkaHeader(key: k, value: value))
                }
            }
            return OutboxEntry(
                id: try row.decode(0),
                record: KafkaOutgoingRecord(
                    topic: try row.decode(1), key: try row.decode(2, as: [UInt8]?.self), value: try row.decode(3, as: [UInt8].self),
                    headers: headers))
        }
    }

    func deleteOutbox(ids: [Int64], on conn: PostgresConnection) async throws {
        let list = "{" + ids.map(String.init).joined(separator: ",") + "}"
        _ = try await conn.query("DELETE FROM outbox WHERE id = ANY($1::bigint[])", [list])
    }

    // MARK: helpers

    private func run(_ conn: PostgresConnection?, _ sql: String, _ params: [any PostgresBindable]) async throws -> PostgresQueryResult {
        if let conn { return try await conn.query(sql, params) }
        return try await db.query(sql, params)
    }

    private func status(_ row: PostgresRow, _ index: Int) throws -> OrderStatus {
        guard let s = OrderStatus(rawValue: try row.decode(index)) else { throw PersistFailure.unexpected("bad order status in column \(index)") }
        return s
    }

    private func money(_ row: PostgresRow, _ index: Int) throws -> Money {
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

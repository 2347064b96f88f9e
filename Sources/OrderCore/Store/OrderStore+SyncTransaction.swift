import Foundation
import Kafka
import Postgres

extension OrderStore {
    /// The statements of one transaction of the store, run synchronously on the connection's queue
    /// (see `syncTransaction`); every statement of the order domain that runs in a transaction is
    /// written here once. Only the store makes one; it lives as long as the body that got it.
    public struct SyncTransaction {
        let store: OrderStore
        let conn: PostgresSyncConnection

        /// The user's cart with its lines (see `OrderStore.cart(userId:)`), read in this transaction.
        func cart(userId: Int64) throws -> Cart {
            let rows = try conn.query(OrderStore.cartSQL, [userId]).rows
            return try store.cart(userId: userId, rows: rows, offset: 0) ?? .empty(userId: userId)
        }

        /// Remembers a reply; false when the key was stored meanwhile (by a concurrent redelivery).
        @discardableResult
        public func storeReply(key: String, reply: [UInt8]) throws -> Bool {
            try conn.query(OrderStore.storeReplySQL, [key, reply]).affectedRows == 1
        }

        /// Remembers the transaction's reply as its last statement, with COMMIT in the same round
        /// trip (`PostgresSyncConnection.queryThenCommit`). False when the key is stored already (by
        /// a concurrent redelivery): the insert then fails in SQL (no `ON CONFLICT DO NOTHING`, so
        /// that the COMMIT riding with it never runs), nothing is committed, and the caller must
        /// throw so that the aborted transaction is rolled back.
        func storeReplyThenCommit(key: String, reply: [UInt8]) throws -> Bool {
            do {
                _ = try conn.queryThenCommit("INSERT INTO processed_requests (idempotency_key, reply) VALUES ($1, $2)", [key, reply])
                return true
            } catch let error as PostgresError where error.isUniqueViolation && error.constraint == "processed_requests_pkey" {
                return false
            }
        }

        /// What `batch` found, each in its inputs' order.
        struct BatchResults {
            var carts: [OrderStore.CartBatchOutcome] = []
            /// Nil for an order that did not move.
            var finished: [OrderStore.FinishedOrder?] = []
            var reads: [[PostgresRow]] = []
        }

        /// The cart requests `(key, user, operation)` in one statement (each key claimed with a
        /// placeholder that `storeRepliesThenCommit` fills in), the orders' moves from pending
        /// (`finishOrdersSQL`) and the reads, in this order, in one round trip.
        func batch(
            _ requests: [(key: String, userId: Int64, operation: OrderStore.CartOperation)], finishing: [(orderId: Int64, status: OrderStatus)],
            reading: [(sql: String, params: [any PostgresBindable])]
        ) throws -> BatchResults {
            var statements: [(sql: String, params: [any PostgresBindable])] = []
            if !requests.isEmpty { statements.append(Self.cartBatchStatement(requests)) }
            // A result repeated within the batch moves its order at most once, as one after the
            // other would: only the first of an order goes into the statement.
            var seen = Set<Int64>(), firsts: [(orderId: Int64, status: OrderStatus)] = []
            for f in finishing where seen.insert(f.orderId).inserted { firsts.append(f) }
            if !firsts.isEmpty {
                statements.append((
                    OrderStore.finishOrdersSQL,
                    [PostgresArrayLiteral(firsts.map(\.orderId)), PostgresArrayLiteral(firsts.map { Optional($0.status.rawValue) })]
                ))
            }
            statements += reading
            guard !statements.isEmpty else { return BatchResults() }
            let results = try conn.pipeline(statements)
            guard results.count == statements.count else { throw PersistFailure.unexpected("cart batch: \(results.count) results") }
            var found = BatchResults()
            if !requests.isEmpty { found.carts = try cartBatchOutcomes(results[0].rows, requests: requests) }
            var moved: [Int64: OrderStore.FinishedOrder] = [:]
            if !firsts.isEmpty {
                for row in results[requests.isEmpty ? 0 : 1].rows {
                    let id: Int64 = try row.decode(0)
                    moved[id] = OrderStore.FinishedOrder(orderId: id, userId: try row.decode(1), total: try store.money(row, 2), at: try row.decode(3))
                }
            }
            seen = []
            found.finished = finishing.map { f in seen.insert(f.orderId).inserted ? moved[f.orderId] : nil }
            found.reads = results.suffix(reading.count).map(\.rows)
            return found
        }

        private static func cartBatchStatement(
            _ requests: [(key: String, userId: Int64, operation: OrderStore.CartOperation)]
        ) -> (sql: String, params: [any PostgresBindable]) {
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
                case .claim:
                    ops.append("claim"); products.append(nil); names.append(nil); prices.append(nil); quantities.append(nil)
                }
            }
            return (
                "SELECT * FROM order_service_cart_batch($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::numeric[], $7::integer[], $8, $9)",
                [
                    PostgresArrayLiteral(requests.map { Optional($0.key) }), PostgresArrayLiteral(ops),
                    PostgresArrayLiteral(requests.map(\.userId)), PostgresArrayLiteral(products), PostgresArrayLiteral(names),
                    PostgresArrayLiteral(prices), PostgresArrayLiteral(quantities), Limits.maxQuantity, Limits.maxCartLines,
                ]
            )
        }

        private func cartBatchOutcomes(
            _ rows: [PostgresRow], requests: [(key: String, userId: Int64, operation: OrderStore.CartOperation)]
        ) throws -> [OrderStore.CartBatchOutcome] {
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
                return try store.cartChange(userId: requests[i].userId, rows: group, offset: 1)
            }
        }

        /// Fills in the replies of keys claimed by `cartBatch` as the transaction's last statement,
        /// with COMMIT in the same round trip. The affected-rows check is in the statement itself:
        /// a count other than the replies' fails it (a cast of the message to bigint), so the COMMIT
        /// riding with it never runs. Checked after the commit instead, a mismatch would leave a key
        /// committed with its empty placeholder, the answer every redelivery would then get.
        func storeRepliesThenCommit(_ replies: [(key: String, reply: [UInt8])]) throws {
            guard !replies.isEmpty else { return try conn.commit() }
            do {
                _ = try conn.queryThenCommit(
                    OrderStore.storeRepliesSQL,
                    [PostgresArrayLiteral(replies.map { Optional($0.key) }), PostgresByteaArray(replies.map(\.reply)), replies.count])
            } catch let error as PostgresError where error.sqlState == "22P02" && error.message.contains(" batched replies") {
                throw PersistFailure.unexpected(error.message)
            }
        }

        /// Ids for an order of `lines` lines not made from a cart (tools and tests).
        func newOrderIds(lines: Int) throws -> OrderStore.OrderIds {
            let results = try conn.pipeline([(OrderStore.orderIdSQL, []), (OrderStore.newLineIdsSQL, [lines])])
            guard results.count == 2, let first = results[0].rows.first else { throw PersistFailure.unexpected("no order id") }
            return OrderStore.OrderIds(
                orderId: try first.decode(0), createdAt: try first.decode(1), lineIds: try results[1].rows.map { try $0.decode(0, as: Int64.self) }.sorted())
        }

        /// Takes these lines out of the cart (lines added meanwhile stay). Sent with the
        /// transaction's next statement (`PostgresSyncConnection.later`): nothing reads its result.
        func deleteLines(cartId: Int64, lineIds: [Int64]) {
            conn.later(
                "DELETE FROM cart_items WHERE cart_id = $1 AND cart_item_id = ANY($2::bigint[])", [cartId, PostgresArrayLiteral(lineIds)])
        }

        /// The user's cart with its lines, its row locked until the transaction ends, and the ids
        /// and creation time of the order it may become; nil when the user has no cart. One round
        /// trip (a pipeline runs its statements in order, so the reads start once the lock is held):
        /// - the lock and the lines are two statements on purpose: under READ COMMITTED a join
        ///   locked `FOR UPDATE OF c` may return the lines of the snapshot taken before waiting for
        ///   the lock; the second statement reads the lines as committed by whoever held the lock
        ///   (every cart change takes the cart row's lock first);
        /// - the order's id and one line id per cart line come from their sequences, with the
        ///   transaction's `now()` (the orders' `created_at` default), so that the order's reply is
        ///   known before its insert, which then rides with the last round trip (`insertOrder`). An
        ///   id taken for an order that is not made (the cart changed) is a gap, as a rollback leaves.
        func lockCartForOrder(userId: Int64) throws -> (cart: Cart, ids: OrderStore.OrderIds)? {
            let results = try conn.pipeline([
                ("SELECT cart_id FROM carts WHERE user_id = $1 FOR UPDATE", [userId]), (OrderStore.cartSQL, [userId]),
                (OrderStore.orderIdSQL, []), (OrderStore.orderLineIdsSQL, [userId]),
            ])
            guard results.count == 4, !results[0].rows.isEmpty,
                let cart = try store.cart(userId: userId, rows: results[1].rows, offset: 0), let first = results[2].rows.first
            else { return nil }
            // Ascending, so that the lines keep the cart's order in the order, as an insert would number them.
            let lineIds = try results[3].rows.map { try $0.decode(0, as: Int64.self) }.sorted()
            guard lineIds.count == cart.items.count else {
                throw PersistFailure.unexpected("order ids: \(lineIds.count) line ids for \(cart.items.count) cart lines")
            }
            return (cart, OrderStore.OrderIds(orderId: try first.decode(0), createdAt: try first.decode(1), lineIds: lineIds))
        }

        /// Inserts the order and all its lines, with the ids `lockCartForOrder` took, in one
        /// statement sent with the transaction's next one (`PostgresSyncConnection.later`): nothing
        /// reads its result, and if it fails, that statement throws and nothing is committed.
        /// `total` is the lines' checked sum; `lines` are in the cart's order, one per line id.
        func insertOrder(userId: Int64, ids: OrderStore.OrderIds, lines: [(product: Product, quantity: Int)], total: Money) throws -> Order {
            guard ids.lineIds.count == lines.count else {
                throw PersistFailure.unexpected("order insert: \(ids.lineIds.count) line ids for \(lines.count) lines")
            }
            conn.later(
                OrderStore.insertOrderSQL,
                [
                    ids.orderId, userId, total.description, PostgresArrayLiteral(ids.lineIds),
                    PostgresArrayLiteral(lines.map(\.product.productId)), PostgresArrayLiteral(lines.map { Optional($0.product.name) }),
                    PostgresArrayLiteral(lines.map { Optional($0.product.price.description) }), PostgresArrayLiteral(lines.map(\.quantity)),
                ])
            let items = try zip(ids.lineIds, lines).map { id, line in
                try OrderItem(orderItemId: id, productId: line.product.productId, productName: line.product.name, unitPrice: line.product.price, quantity: line.quantity)
            }
            return Order(orderId: ids.orderId, userId: userId, status: .pending, totalPrice: total, createdAt: ids.createdAt, items: items)
        }

        /// Moves a pending order to its final status; nil when it is not pending (repeat or late result).
        func finishOrder(orderId: Int64, status: OrderStatus) throws -> OrderStore.FinishedOrder? {
            try batch([], finishing: [(orderId, status)], reading: []).finished.first ?? nil
        }

        /// Queues records in the outbox, in order, with one statement, sent with the transaction's
        /// next statement (`PostgresSyncConnection.later`). `thenCommit`: it is the transaction's
        /// last statement, sent now with COMMIT in the same round trip.
        func enqueue(_ queued: [OrderStore.OutboxRecord], thenCommit: Bool = false) throws {
            let records = queued.map(\.record)
            guard !records.isEmpty else {
                if thenCommit { try conn.commit() }
                return
            }
            let headers = records.map { record in
                JSON.array(record.headers.map { h in
                    .object([("k", .string(h.key)), ("v", h.value.map { .string(Data($0).base64EncodedString()) } ?? .null)])
                }).bytes
            }
            let sql = """
                INSERT INTO outbox (topic, key, value, headers, ordering_key)
                SELECT v.topic, v.key, v.value, v.headers, v.ordering_key
                FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::bytea[], $5::text[]) WITH ORDINALITY AS v(topic, key, value, headers, ordering_key, n)
                ORDER BY v.n
                """
            let params: [any PostgresBindable] = [
                PostgresArrayLiteral(records.map { Optional($0.topic) }), PostgresByteaArray(records.map(\.key)),
                PostgresByteaArray(records.map { $0.value ?? [] }), PostgresByteaArray(headers),
                PostgresArrayLiteral(queued.map(\.orderingKey)),
            ]
            if thenCommit { _ = try conn.queryThenCommit(sql, params) } else { conn.later(sql, params) }
        }

        /// Oldest unsent outbox records, locked so that another instance skips them. A row whose
        /// ordering key has an older row left (being sent by someone, or not yet) waits for it.
        func lockOutbox(limit: Int) throws -> [OrderStore.OutboxEntry] {
            let rows = try conn.query(
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

        /// `query`; with `last`, the transaction's last statement, COMMIT in its round trip.
        private func run(_ sql: String, _ params: [any PostgresBindable], last: Bool) throws -> PostgresQueryResult {
            last ? try conn.queryThenCommit(sql, params) : try conn.query(sql, params)
        }

        /// Ends the transaction here: COMMIT in this hand-off, none afterwards (see
        /// `PostgresSyncConnection.commit`).
        func commit() throws { try conn.commit() }

        /// `thenCommit`: the transaction's last statement, COMMIT in the same round trip.
        func deleteOutbox(ids: [Int64], thenCommit: Bool = false) throws {
            let list = "{" + ids.map(String.init).joined(separator: ",") + "}"
            _ = try run("DELETE FROM outbox WHERE id = ANY($1::bigint[])", [list], last: thenCommit)
        }
    }
}

import Kafka

/// Stage 4: persists what a request changes. The reply is stored under the request's
/// idempotency key in the same transaction, and records to send afterwards (deduction request,
/// notifications) are written to the outbox in it too: all or nothing. Cart requests of different
/// users share transactions (the injected `CartBatcher`, group commit).
public struct PersistStage: Sendable {
    public let store: OrderStore
    public let topics: Topics
    public let carts: CartBatcher
    /// CloudEvents `source` of the notifications (`ORDER_SERVICE_EVENT_SOURCE`).
    public let eventSource: String

    public init(store: OrderStore, carts: CartBatcher, topics: Topics, eventSource: String = OutgoingMessages.defaultEventSource) {
        self.store = store
        self.topics = topics
        self.eventSource = eventSource
        self.carts = carts
    }

    /// What a state-changing transaction produced.
    public enum Result: Sendable, Equatable {
        /// Committed; this reply (success or refusal) was stored with it. `wroteOutbox`: records
        /// to send were queued in the outbox too.
        case committed(RequestOutcome, wroteOutbox: Bool)
        /// Rolled back: the request is refused and nothing changed.
        case rejected(ServiceError)
        /// Another delivery of the same request committed first; its stored reply is the answer.
        case alreadyProcessed(RequestOutcome)
        /// Rolled back: the cart under its lock is not the cart that was checked (a concurrent
        /// change or order); nothing changed, check again.
        case cartChanged
    }

    struct Rejection: Error { let error: ServiceError }
    struct Duplicate: Error {}
    struct CartChanged: Error {}

    /// `body` in one transaction that ends by storing its reply under `key`, all in one hand-off to
    /// the connection's queue; the reply's insert and COMMIT share a network round trip.
    func transaction(
        key: String, _ body: @escaping @Sendable (OrderStore.SyncTransaction) throws -> (RequestOutcome, wroteOutbox: Bool)
    ) async throws -> Result {
        do {
            return try await Spans.child("transaction", kind: .client, attributes: MessagingAttributes.database(operation: "transaction")) {
                try await store.syncTransaction { tx in
                    let (outcome, outbox) = try body(tx)
                    guard try tx.storeReplyThenCommit(key: key, reply: outcome.reply) else { throw Duplicate() }
                    return .committed(outcome, wroteOutbox: outbox)
                }
            }
        } catch let r as Rejection {
            return .rejected(r.error)
        } catch is Duplicate {
            return .alreadyProcessed(try await storedReply(key))
        } catch is CartChanged {
            return .cartChanged
        }
    }

    private func storedReply(_ key: String) async throws -> RequestOutcome {
        guard let stored = try await store.storedReply(key: key) else { throw PersistFailure.unexpected("stored reply vanished") }
        return RequestOutcome(stored: stored)
    }

    /// One cart request through the batcher; `reply` turns what it found into the reply to store.
    func batched(
        key: String, userId: Int64, _ operation: OrderStore.CartOperation,
        reply: @escaping @Sendable (OrderStore.CartChange) throws -> RequestOutcome
    ) async throws -> Result {
        switch try await carts.run(CartBatcher.Request(key: key, userId: userId, operation: operation, reply: reply)) {
        case .stored(let outcome): return .committed(outcome, wroteOutbox: false)
        case .duplicate: return .alreadyProcessed(try await storedReply(key))
        }
    }

    public func addItem(key: String, requestId: String?, userId: Int64, product: Product, quantity: Int) async throws -> Result {
        try await batched(key: key, userId: userId, .add(product, quantity: quantity)) { change in
            switch change {
            case .changed(let cart):
                return RequestOutcome.ok(requestId: requestId, action: "add_item", body: [("cart", cart.json)])
            case .tooMany(let current):
                return RequestOutcome.error(requestId: requestId, action: "add_item", .invalid(
                    "a line's quantity may not exceed \(Limits.maxQuantity) (the cart holds \(current) of product \(product.productId))"))
            case .cartFull:
                return RequestOutcome.error(requestId: requestId, action: "add_item", ServiceError(.cartFull, "a cart holds at most \(Limits.maxCartLines) lines"))
            case .overTotal:
                return RequestOutcome.error(requestId: requestId, action: "add_item", .overTotal)
            case .notFound:
                throw PersistFailure.unexpected("add_item reported not_found")
            }
        }
    }

    /// update_item and remove_item (quantity 0).
    public func setItem(key: String, requestId: String?, action: String, userId: Int64, productId: Int64, quantity: Int) async throws -> Result {
        try await batched(key: key, userId: userId, .set(productId: productId, quantity: quantity)) { change in
            switch change {
            case .changed(let cart): return RequestOutcome.ok(requestId: requestId, action: action, body: [("cart", cart.json)])
            case .overTotal: return RequestOutcome.error(requestId: requestId, action: action, .overTotal)
            case .notFound, .tooMany, .cartFull:
                return RequestOutcome.error(requestId: requestId, action: action, ServiceError(.itemNotFound, "product \(productId) is not in the cart"))
            }
        }
    }

    /// Stores a reply decided without a transaction of its own (a refusal, a read such as
    /// list_orders) under `key` unless the key has one already; returns the reply that stands.
    /// It goes with the next cart batch (`CartOperation.claim`): no round trip of its own.
    public func remember(key: String, userId: Int64, _ outcome: RequestOutcome) async throws -> RequestOutcome {
        switch try await carts.run(CartBatcher.Request(key: key, userId: userId, operation: .claim, reply: { _ in outcome })) {
        case .stored(let stored): return stored
        // A key stored meanwhile and already expired again leaves nothing to read: this reply stands.
        case .duplicate: return try await store.storedReply(key: key).map(RequestOutcome.init(stored:)) ?? outcome
        }
    }

    /// The user's cart (as `OrderStore.cart(userId:)`), read with the next cart batch: no round
    /// trip of its own.
    public func cart(userId: Int64) async throws -> Cart {
        let store = self.store
        return try await carts.read(OrderStore.cartSQL, [userId]) { rows in try store.cart(userId: userId, rows: rows, offset: 0) ?? .empty(userId: userId) }
    }

    /// A page of the user's orders (as `OrderStore.orders`), read with the next cart batch.
    public func orders(userId: Int64, beforeOrderId: Int64?, limit: Int) async throws -> [Order] {
        let store = self.store
        return try await carts.read(OrderStore.ordersSQL, [userId, beforeOrderId ?? Int64.max, Int64(limit)]) { rows in
            try store.ordersWithItems(userId: userId, rows: rows)
        }
    }

    /// One of the user's orders (as `OrderStore.order`), read with the next cart batch.
    public func order(orderId: Int64, userId: Int64) async throws -> Order? {
        let store = self.store
        return try await carts.read(OrderStore.orderSQL, [orderId, userId]) { rows in try store.ordersWithItems(userId: userId, rows: rows).first }
    }

    /// get_cart: a read, but its reply is stored too, so that a repeat gets the same answer.
    public func getCart(key: String, requestId: String?, userId: Int64) async throws -> Result {
        try await batched(key: key, userId: userId, .get) { change in
            guard case .changed(let cart) = change else { throw PersistFailure.unexpected("get_cart found \(change)") }
            return RequestOutcome.ok(requestId: requestId, action: "get_cart", body: [("cart", cart.json)])
        }
    }

    /// Creates the pending order of the lines in `checked` at the looked-up prices, takes those
    /// lines (and only those) out of the cart, and queues the deduction request and the `pending`
    /// notification in the outbox. Under the cart's lock the cart must still hold exactly the
    /// checked lines (same line ids, products and quantities); otherwise nothing changes and the
    /// result is `cartChanged`, so that the caller checks the cart as it is now.
    public func createOrder(key: String, requestId: String?, userId: Int64, checked: Cart, products: [Int64: Product]) async throws -> Result {
        try await transaction(key: key) { tx in
            guard let (cart, ids) = try tx.lockCartForOrder(userId: userId), let cartId = cart.cartId, !cart.items.isEmpty,
                cart.items.map(\.orderedPart) == checked.items.map(\.orderedPart)
            else { throw CartChanged() }
            var lines: [(product: Product, quantity: Int)] = []
            for item in cart.items {
                guard let p = products[item.productId] else {
                    throw Rejection(error: ServiceError(
                        .productNotFound, "unknown product id(s): \(item.productId)", details: [("product_ids", [.int(item.productId)])]))
                }
                lines.append((p, item.quantity))
            }
            // At the looked-up prices the order could pass the bound even though the cart did not.
            var lineTotals: [Money] = []
            for line in lines {
                guard let t = line.product.price.times(line.quantity) else { throw Rejection(error: .overTotal) }
                lineTotals.append(t)
            }
            guard let total = Money.sum(lineTotals) else { throw Rejection(error: .overTotal) }
            let order = try tx.insertOrder(userId: userId, ids: ids, lines: lines, total: total)
            tx.deleteLines(cartId: cartId, lineIds: cart.items.map(\.cartItemId))
            try tx.enqueue([
                .init(record: OutgoingMessages.deductionRequest(order, topics: topics), orderingKey: nil),
                OutgoingMessages.notification(order: order.orderId, user: userId, status: .pending, total: order.totalPrice, at: order.createdAt, topics: topics, source: eventSource),
            ])
            return (.ok(requestId: requestId, action: "create_order", body: [("order", order.json)]), true)
        }
    }

    /// Applies a deduction result; a repeated or late result changes nothing. True when the
    /// order moved (and its notification was queued). It goes with the next cart batch
    /// (`CartBatcher.finish`): no transaction of its own when cart requests are about.
    public func finishOrder(orderId: Int64, status: OrderStatus) async throws -> Bool {
        let topics = self.topics, source = eventSource
        return try await carts.finish(CartBatcher.Finish(orderId: orderId, status: status) { done in
            OutgoingMessages.notification(order: done.orderId, user: done.userId, status: status, total: done.total, at: done.at, topics: topics, source: source)
        })
    }
}

/// Records the service sends besides replies.
public enum OutgoingMessages {
    /// CloudEvents `type` of every notification (docs/contract.md section 8).
    public static let notificationEventType = "io.order-service.order.status_changed.v1"
    /// CloudEvents `source` unless `ORDER_SERVICE_EVENT_SOURCE` says otherwise.
    public static let defaultEventSource = "/order-service"

    static func deductionRequest(_ order: Order, topics: Topics) -> KafkaOutgoingRecord {
        let id = "deduct-\(order.orderId)"
        let body = JSON.object([
            ("request_id", .string(id)), ("order_id", .int(order.orderId)),
            ("items", .array(order.items.map { .object([("product_id", .int($0.productId)), ("quantity", .int(Int64($0.quantity)))]) })),
        ])
        return KafkaOutgoingRecord(
            topic: topics.deductionRequests, key: Array(String(order.orderId).utf8), value: body.bytes,
            headers: [
                KafkaHeader("reply-to", topics.deductionResults), KafkaHeader("correlation-id", id),
                KafkaHeader("content-type", "application/json"),
            ] + TraceContext.outgoingHeaders)
    }

    /// The id of one order's status change: the same every time the event is sent (after a crash
    /// too), so consumers can deduplicate by it.
    static func eventId(order: Int64, status: OrderStatus) -> String { "order-\(order)-\(status.rawValue)" }

    /// A status change of an order, queued under the order's ordering key so that its events are
    /// published in status order.
    ///
    /// CloudEvents 1.0, Kafka protocol binding, binary mode: the value is the event data as
    /// before, the attributes are `ce_*` headers; `ce_id` is the stable event id.
    static func notification(
        order: Int64, user: Int64, status: OrderStatus, total: Money, at: String, topics: Topics, source: String = defaultEventSource
    ) -> OrderStore.OutboxRecord {
        let id = eventId(order: order, status: status)
        let body = JSON.object([
            ("event", "order_status_changed"), ("event_id", .string(id)), ("order_id", .int(order)), ("user_id", .int(user)),
            ("status", .string(status.rawValue)), ("total_price", total.json), ("at", .string(at)),
        ])
        let record = KafkaOutgoingRecord(
            topic: topics.notifications, key: Array(String(user).utf8), value: body.bytes,
            headers: [
                KafkaHeader("content-type", "application/json"), KafkaHeader("event-id", id),
                KafkaHeader("ce_specversion", "1.0"), KafkaHeader("ce_id", id), KafkaHeader("ce_type", notificationEventType),
                KafkaHeader("ce_source", source), KafkaHeader("ce_time", at), KafkaHeader("ce_subject", String(order)),
            ] + TraceContext.outgoingHeaders)
        return OrderStore.OutboxRecord(record: record, orderingKey: "order/\(order)")
    }
}

extension CartItem {
    /// What an order takes from a cart line: which line, which product, how many.
    fileprivate var orderedPart: [Int64] { [cartItemId, productId, Int64(quantity)] }
}

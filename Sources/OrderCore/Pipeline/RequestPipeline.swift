import Kafka
import Logging
import Postgres

/// Runs one consumed record through its stages: decode/validate → idempotency → product lookup
/// → inventory check → persist, and says what to send. Stages stay free of Kafka offsets,
/// ordering and retries: the `Dispatcher` owns those.
public struct RequestPipeline: RecordHandler {
    public let topics: Topics
    public let routing: ReplyRouting
    public let products: ProductLookupStage
    /// For add_item: may answer from recently fetched details (bounded staleness, off by default).
    public let recentProducts: ProductLookupStage
    public let inventory: InventoryCheckStage
    public let persist: PersistStage
    public let store: OrderStore
    /// Called after a transaction wrote outbox records, so they are sent without waiting for a sweep.
    public let outboxWritten: @Sendable () -> Void
    public let metrics: ServiceMetrics?
    public let logger: Logger
    /// Test only (ORDER_SERVICE_TEST_CRASH_ON): a request whose value contains these bytes stops
    /// the process at once, as a record that crashes the service would. Nil (always in
    /// production): a single nil test per record.
    public let crashOn: [UInt8]?

    public init(
        topics: Topics, routing: ReplyRouting, catalog: any ProductCatalog, addItemCatalog: (any ProductCatalog)? = nil,
        inventory: any InventoryChecker, store: OrderStore, outboxWritten: @escaping @Sendable () -> Void = {},
        metrics: ServiceMetrics? = nil, logger: Logger, crashOn: [UInt8]? = nil
    ) {
        self.topics = topics
        self.routing = routing
        self.products = ProductLookupStage(catalog: catalog)
        self.recentProducts = ProductLookupStage(catalog: addItemCatalog ?? catalog)
        self.inventory = InventoryCheckStage(inventory: inventory)
        self.persist = PersistStage(store: store, topics: topics)
        self.store = store
        self.outboxWritten = outboxWritten
        self.metrics = metrics
        self.logger = logger
        self.crashOn = crashOn.flatMap { $0.isEmpty ? nil : $0 }
    }

    // MARK: RecordHandler

    public func laneKey(for record: KafkaRecord) -> String {
        if let key = record.key { return "k:" + String(decoding: key, as: UTF8.self) }
        return "p:\(record.topic)/\(record.partition)"
    }

    public func handle(_ record: KafkaRecord) async throws -> [KafkaOutgoingRecord] {
        let started = ContinuousClock.now
        let outputs = try await answer(record)
        if let metrics {
            let reply = outputs.first { $0.topic != topics.deadLetters }
            let action = record.topic == topics.deductionResults
                ? "deduction_result" : reply.flatMap { $0.value }.map(ServiceMetrics.action(ofReply:)) ?? "malformed"
            metrics.record(
                action: action, outcome: reply.flatMap { $0.value }.map(ServiceMetrics.outcome(ofReply:)) ?? "none",
                latency: ContinuousClock.now - started)
            let dead = outputs.filter { $0.topic == topics.deadLetters }.count
            if dead > 0 { metrics.deadLettered(dead) }
        }
        return outputs
    }

    func answer(_ record: KafkaRecord) async throws -> [KafkaOutgoingRecord] {
        if record.topic == topics.deductionResults { return try await handleDeductionResult(record) }
        guard let kind = topics.requestKind(ofTopic: record.topic) else { return [] }
        if let crashOn, let value = record.value, Self.contains(value, crashOn) {
            logger.critical("ORDER_SERVICE_TEST_CRASH_ON matched: crashing on purpose", metadata: record.logMetadata)
            fatalError("test crash switch (ORDER_SERVICE_TEST_CRASH_ON) matched \(record.topic)[\(record.partition)]@\(record.offset)")
        }
        let decoded = DecodeStage(topic: kind).decode(record.value)

        let replyTopic: String
        switch routing.target(for: record) {
        case .topic(let t): replyTopic = t
        case .rejected(let fallback):
            let (rid, action) = decoded.identity
            let err = ServiceError(.invalidReplyTo, "reply-to must name a response topic; nothing was changed")
            return [routing.reply(to: record, topic: fallback, value: Reply.error(requestId: rid, action: action, err).bytes)]
        }

        switch decoded {
        case .rejected(let rid, let action, let error, let deadLetter):
            var out = [routing.reply(to: record, topic: replyTopic, value: Reply.error(requestId: rid, action: action, error).bytes)]
            if deadLetter { out.append(routing.deadLetter(record, error: error.message)) }
            return out
        case .request(let request):
            // No look-up first: every outcome is stored with INSERT … ON CONFLICT DO NOTHING, and
            // a conflict means the key was processed before, so its stored reply is sent instead.
            let key = idempotencyKey(request, kind: kind, record: record)
            let reply = try await execute(request, key: key)
            return [routing.reply(to: record, topic: replyTopic, value: reply)]
        }
    }

    public func failure(_ record: KafkaRecord, error: any Error) -> [KafkaOutgoingRecord] {
        logger.error("internal error: \(String(describing: error))", metadata: record.logMetadata)
        return errorAnswer(
            record, message: "the request could not be processed; it was recorded for the operators",
            deadLetterError: "internal error: \(error)")
    }

    /// Given up by the crash-loop breaker: never handled, answered like an internal error.
    public func poisoned(_ record: KafkaRecord) -> [KafkaOutgoingRecord] {
        errorAnswer(
            record, message: "this record stopped the service repeatedly; it was not processed and was recorded for the operators",
            deadLetterError: "crash loop: this record was in progress at repeated unclean exits of the service; it was not processed")
    }

    /// `internal_error` to the reply topic plus a dead-letter copy; only the copy for a deduction result.
    private func errorAnswer(_ record: KafkaRecord, message: String, deadLetterError: String) -> [KafkaOutgoingRecord] {
        if record.topic == topics.deductionResults { return [routing.deadLetter(record, error: deadLetterError)] }
        let (rid, action) = topics.requestKind(ofTopic: record.topic).map { DecodeStage(topic: $0).decode(record.value).identity } ?? (nil, nil)
        let replyTopic: String
        switch routing.target(for: record) {
        case .topic(let t): replyTopic = t
        case .rejected(let fallback): replyTopic = fallback
        }
        metrics?.record(action: action ?? "malformed", outcome: "internal_error", latency: .zero)
        metrics?.deadLettered()
        let err = ServiceError(.internalError, message)
        return [
            routing.reply(to: record, topic: replyTopic, value: Reply.error(requestId: rid, action: action, err).bytes),
            routing.deadLetter(record, error: deadLetterError),
        ]
    }

    /// Whether `needle` occurs in `haystack` (the test crash switch; never on the normal path).
    static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, haystack.count >= needle.count else { return false }
        for start in 0...(haystack.count - needle.count) where haystack[start] == needle[0] {
            if haystack[start..<(start + needle.count)].elementsEqual(needle) { return true }
        }
        return false
    }

    public func isRetriable(_ error: any Error) -> Bool {
        if let e = error as? PostgresError { return e.isRetriable }
        if let e = error as? KafkaError { return e.isRetriable }
        return false
    }

    // MARK: Actions

    /// Idempotency key: request_id (scoped by request topic and user), else the record's position.
    func idempotencyKey(_ request: Request, kind: RequestTopicKind, record: KafkaRecord) -> String {
        if let rid = request.requestId {
            // PostgreSQL text cannot hold NUL: escape it (and the escape character) so that
            // distinct request ids stay distinct keys.
            let text = rid.utf8.contains(where: { $0 == 0 || $0 == UInt8(ascii: "%") })
                ? rid.replacingOccurrences(of: "%", with: "%25").replacingOccurrences(of: "\u{0}", with: "%00") : rid
            return "\(kind.rawValue)/\(request.command.userId ?? 0)/\(text)"
        }
        return "offset/\(record.topic)/\(record.partition)/\(record.offset)"
    }

    func execute(_ request: Request, key: String) async throws -> [UInt8] {
        let rid = request.requestId
        let action = request.command.action
        /// Stores the reply unless the key has one already; returns the reply that stands.
        func remember(_ bytes: [UInt8]) async throws -> [UInt8] {
            if try await store.db.withConnection({ try await store.storeReply($0, key: key, reply: bytes) }) { return bytes }
            return try await store.storedReply(key: key) ?? bytes
        }
        func fail(_ e: ServiceError) async throws -> [UInt8] {
            let bytes = Reply.error(requestId: rid, action: action, e).bytes
            // Transient failures are not remembered, so a retry with the same request_id tries
            // again; but a repeat of a request that succeeded earlier still gets that reply.
            if e.code.isTransient { return try await store.storedReply(key: key) ?? bytes }
            return try await remember(bytes)
        }
        func ok(_ body: [(String, JSON)]) async throws -> [UInt8] {
            try await remember(Reply.ok(requestId: rid, action: action, body: body).bytes)
        }
        func finish(_ result: PersistStage.Result) async throws -> [UInt8] {
            switch result {
            case .committed(let reply, let outbox):
                if outbox { outboxWritten() }
                return reply.bytes
            case .stored(let reply), .alreadyProcessed(let reply): return reply
            case .rejected(let e): return try await fail(e)
            }
        }

        switch request.command {
        case .getCart(let user):
            return try await finish(await persist.getCart(key: key, requestId: rid, userId: user))
        case .addItem(let user, let productId, let quantity):
            switch await recentProducts.run([productId]) {
            case .failure(let e): return try await fail(e)
            case .success(let found):
                guard let product = found[productId] else {
                    return try await fail(ServiceError(.productNotFound, "unknown product id(s): \(productId)", details: [("product_ids", [.int(productId)])]))
                }
                return try await finish(await persist.addItem(key: key, requestId: rid, userId: user, product: product, quantity: quantity))
            }
        case .updateItem(let user, let productId, let quantity):
            return try await finish(await persist.setItem(key: key, requestId: rid, action: action, userId: user, productId: productId, quantity: quantity))
        case .removeItem(let user, let productId):
            return try await finish(await persist.setItem(key: key, requestId: rid, action: action, userId: user, productId: productId, quantity: 0))
        case .createOrder(let user):
            let cart = try await store.cart(userId: user)
            guard !cart.items.isEmpty else { return try await fail(ServiceError(.cartEmpty, "the cart is empty")) }
            let found: [Int64: Product]
            switch await products.run(cart.items.map(\.productId)) {
            case .failure(let e): return try await fail(e)
            case .success(let p): found = p
            }
            if case .failure(let e) = await inventory.run(cart.items.map { ($0.productId, $0.quantity) }) { return try await fail(e) }
            return try await finish(await persist.createOrder(key: key, requestId: rid, userId: user, products: found))
        case .listOrders(let user):
            return try await ok([("orders", .array(try await store.orders(userId: user).map(\.json)))])
        case .getOrder(let user, let orderId):
            guard let order = try await store.order(orderId: orderId, userId: user) else {
                return try await fail(ServiceError(.orderNotFound, "order \(orderId) was not found"))
            }
            return try await ok([("order", order.json)])
        case .listCarts(let limit, let after):
            let page = try await store.carts(limit: limit, afterCartId: after)
            let next: JSON = page.more ? .optional(page.carts.last?.cartId) : .null
            return try await ok([("carts", .array(page.carts.map(\.json))), ("next_after_cart_id", next)])
        }
    }

    /// `inventory_deduction_results`: moves the order to confirmed/rejected. Nothing is replied;
    /// a result that breaks the contract goes to the dead-letter topic.
    func handleDeductionResult(_ record: KafkaRecord) async throws -> [KafkaOutgoingRecord] {
        guard let value = record.value, let json = try? JSON.parse(value), case .int(let orderId)? = json["order_id"],
            case .string(let status)? = json["status"], status == "deducted" || status == "insufficient"
        else { return [routing.deadLetter(record, error: "not a deduction result: needs order_id and status deducted|insufficient")] }
        if try await persist.finishOrder(orderId: orderId, status: status == "deducted" ? .confirmed : .rejected) {
            outboxWritten()
        }
        return []
    }
}

extension DecodeStage.Outcome {
    /// request_id and action as far as they could be read, for error replies.
    var identity: (String?, String?) {
        switch self {
        case .request(let r): (r.requestId, r.command.action)
        case .rejected(let rid, let action, _, _): (rid, action)
        }
    }
}

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
    /// Whether an allow-listed reply-to topic exists (nil: not checked).
    public let replyTopics: ReplyTopicCheck?
    public let logger: Logger
    /// How often create_order checks again when the cart changed between its check and its lock.
    static let createOrderAttempts = 5
    /// Test only (ORDER_SERVICE_TEST_CRASH_ON): a request whose value contains these bytes stops
    /// the process at once, as a record that crashes the service would. Nil (always in
    /// production): a single nil test per record.
    public let crashOn: [UInt8]?
    /// Test only (ORDER_SERVICE_TEST_WEDGE_ON): a request whose value contains these bytes is never
    /// answered (its handling waits for ever), as a record stuck on a hung call would be. Nil
    /// (always in production): a single nil test per record.
    public let wedgeOn: [UInt8]?

    public init(
        topics: Topics, routing: ReplyRouting, catalog: any ProductCatalog, addItemCatalog: (any ProductCatalog)? = nil,
        inventory: any InventoryChecker, store: OrderStore, carts: CartBatcher? = nil, outboxWritten: @escaping @Sendable () -> Void = {},
        metrics: ServiceMetrics? = nil, replyTopics: ReplyTopicCheck? = nil, eventSource: String = OutgoingMessages.defaultEventSource,
        logger: Logger, crashOn: [UInt8]? = nil,
        wedgeOn: [UInt8]? = nil
    ) {
        self.replyTopics = replyTopics
        self.topics = topics
        self.routing = routing
        self.products = ProductLookupStage(catalog: catalog)
        self.recentProducts = ProductLookupStage(catalog: addItemCatalog ?? catalog)
        self.inventory = InventoryCheckStage(inventory: inventory)
        self.persist = PersistStage(store: store, carts: carts ?? CartBatcher(store: store), topics: topics, eventSource: eventSource)
        self.store = store
        self.outboxWritten = outboxWritten
        self.metrics = metrics
        self.logger = logger
        self.crashOn = crashOn.flatMap { $0.isEmpty ? nil : $0 }
        self.wedgeOn = wedgeOn.flatMap { $0.isEmpty ? nil : $0 }
    }

    // MARK: RecordHandler

    public func laneKey(for record: KafkaRecord) -> String {
        if let key = record.key { return "k:" + String(decoding: key, as: UTF8.self) }
        return "p:\(record.topic)/\(record.partition)"
    }

    public func handle(_ record: KafkaRecord) async throws -> [KafkaOutgoingRecord] {
        let started = ContinuousClock.now
        let answered = try await answer(record)
        guard metrics != nil || Telemetry.isTracing else { return answered.outputs }
        let (action, outcome) = counted(record, answered)
        if Telemetry.isTracing { Spans.noteOutcome(action: action, outcome: outcome) }
        if let metrics {
            metrics.record(action: action, outcome: outcome, latency: ContinuousClock.now - started)
            let dead = answered.outputs.filter { $0.topic == topics.deadLetters }.count
            if dead > 0 { metrics.deadLettered(dead) }
        }
        return answered.outputs
    }

    /// What a record came to: the records to send and, when it was a request, its outcome (the
    /// reply among the outputs), which metrics count.
    struct Answered {
        var outputs: [KafkaOutgoingRecord]
        var outcome: RequestOutcome? = nil
    }

    func answer(_ record: KafkaRecord) async throws -> Answered {
        if record.topic == topics.deductionResults { return Answered(outputs: try await handleDeductionResult(record)) }
        guard let kind = topics.requestKind(ofTopic: record.topic) else { return Answered(outputs: []) }
        #if DEBUG
        // Test-only switches, compiled into debug builds only: no record can reach them in a
        // release build, whatever the environment says.
        if let crashOn, let value = record.value, Self.contains(value, crashOn) {
            logger.critical("ORDER_SERVICE_TEST_CRASH_ON matched: crashing on purpose", metadata: record.logMetadata)
            fatalError("test crash switch (ORDER_SERVICE_TEST_CRASH_ON) matched \(record.topic)[\(record.partition)]@\(record.offset)")
        }
        if let wedgeOn, let value = record.value, Self.contains(value, wedgeOn) {
            logger.critical("ORDER_SERVICE_TEST_WEDGE_ON matched: this record is never answered", metadata: record.logMetadata)
            // A continuation nobody resumes: the record stays running and holds no thread.
            await withUnsafeContinuation { (_: UnsafeContinuation<Void, Never>) in }
        }
        #endif
        let decoded = DecodeStage(topic: kind).decode(record.value)
        // A structurally broken record is copied to the dead-letter topic whatever its reply says.
        var deadLetterOfBroken: [KafkaOutgoingRecord] {
            guard case .rejected(_, _, let error, true) = decoded else { return [] }
            return [routing.deadLetter(record, error: error.message, kind: .invalidRequest)]
        }

        let replyTopic: String
        switch routing.target(for: record) {
        case .topic(let t): replyTopic = t
        case .rejected(let fallback):
            let (rid, action) = decoded.identity
            let outcome = RequestOutcome.error(
                requestId: rid, action: action, ServiceError(.invalidReplyTo, "reply-to must name a response topic; nothing was changed"))
            return Answered(outputs: [routing.reply(to: record, topic: fallback, value: outcome.reply)] + deadLetterOfBroken, outcome: outcome)
        }
        if let refusal = await replyTopicRefusal(record, replyTopic) {
            let (rid, action) = decoded.identity
            let outcome = RequestOutcome.error(requestId: rid, action: action, refusal)
            return Answered(
                outputs: [routing.reply(to: record, topic: routing.defaultTopic(for: record), value: outcome.reply)] + deadLetterOfBroken,
                outcome: outcome)
        }
        let replyPartition: Int32?
        if case .partition(let p) = routing.replyPartition(for: record) { replyPartition = p } else { replyPartition = nil }

        switch decoded {
        case .rejected(let rid, let action, let error, let deadLetter):
            let outcome = RequestOutcome.error(requestId: rid, action: action, error)
            var out = [routing.reply(to: record, topic: replyTopic, value: outcome.reply, partition: replyPartition)]
            if deadLetter { out.append(routing.deadLetter(record, error: error.message, kind: .invalidRequest)) }
            return Answered(outputs: out, outcome: outcome)
        case .request(let request):
            // No look-up first: every outcome is stored with INSERT … ON CONFLICT DO NOTHING, and
            // a conflict means the key was processed before, so its stored reply is sent instead.
            let key = idempotencyKey(request, kind: kind, record: record)
            let outcome = try await execute(request, key: key, budget: routing.replyValueBudget(for: record))
            return Answered(outputs: [routing.reply(to: record, topic: replyTopic, value: outcome.reply, partition: replyPartition)], outcome: outcome)
        }
    }

    /// Why the reply topic (and Spring reply partition) named by the record cannot take the reply,
    /// or nil when it can: an allow-listed topic that does not exist, a `kafka_replyPartition` that
    /// is not a 4-byte partition of the reply topic. Checked before anything takes effect.
    func replyTopicRefusal(_ record: KafkaRecord, _ replyTopic: String) async -> ServiceError? {
        let declared = routing.responseTopicNames.contains(replyTopic)
        let wantedPartition = routing.replyPartition(for: record)
        if wantedPartition == .any && (declared || replyTopics == nil) { return nil }
        let lookup = await replyTopics?.lookup(replyTopic) ?? .unknown
        if lookup == .missing && !declared { return ServiceError(.invalidReplyTo, "the reply-to topic does not exist; nothing was changed") }
        switch wantedPartition {
        case .any: return nil
        case .invalid:
            return ServiceError(.invalidReplyTo, "kafka_replyPartition must be a 4-byte big-endian partition number ≥ 0; nothing was changed")
        case .partition(let p):
            var count: Int32?
            if case .exists(let n) = lookup { count = n } else if declared { count = topics.specs.first { $0.name == replyTopic }?.partitions }
            // Unknown (metadata unreadable): taken as valid, like an unknown topic; the send decides.
            if let count, p >= count {
                return ServiceError(.invalidReplyTo, "kafka_replyPartition \(p) is not a partition of the reply topic; nothing was changed")
            }
            return nil
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
            deadLetterError: "crash loop: this record was in progress at repeated unclean exits of the service; it was not processed",
            kind: .crashLoop)
    }

    /// `internal_error` to the reply topic plus a dead-letter copy; only the copy for a deduction result.
    private func errorAnswer(
        _ record: KafkaRecord, message: String, deadLetterError: String, kind: ReplyRouting.DeadLetterKind = .internalError
    ) -> [KafkaOutgoingRecord] {
        if record.topic == topics.deductionResults { return [routing.deadLetter(record, error: deadLetterError, kind: kind)] }
        let (rid, action) = identity(of: record)
        let replyTopic: String
        var partition: Int32?
        switch routing.target(for: record) {
        case .topic(let t):
            replyTopic = t
            // Spring's reply container reads assigned partitions: honour it here as on any reply.
            if case .partition(let p) = routing.replyPartition(for: record) { partition = p }
        case .rejected(let fallback): replyTopic = fallback
        }
        metrics?.record(action: RequestOutcome.metricsAction(action), outcome: "internal_error", latency: .zero)
        metrics?.deadLettered()
        let err = ServiceError(.internalError, message)
        return [
            routing.reply(to: record, topic: replyTopic, value: Reply.error(requestId: rid, action: action, err).bytes, partition: partition),
            routing.deadLetter(record, error: deadLetterError, kind: kind),
        ]
    }

    /// The broker refused the reply for good: one small error reply on the default response topic
    /// (`invalid_reply_to` when a reply-to topic refused it, else `internal_error`), and a
    /// dead-letter copy. The request's effect, if any, stands; its stored reply is sent to a repeat.
    public func undeliverable(_ record: KafkaRecord, error: any Error) -> [KafkaOutgoingRecord] {
        logger.error("the broker refused the reply: \(String(describing: error))", metadata: record.logMetadata)
        if record.topic == topics.deductionResults { return [routing.deadLetter(record, error: "output refused: \(error)", kind: .replyRefused)] }
        let (rid, action) = identity(of: record)
        let fallback = routing.defaultTopic(for: record)
        let tooLarge = (error as? KafkaError)?.code == KafkaError.messageSizeTooLargeCode
        let err: ServiceError
        if !tooLarge, case .topic(let wanted) = routing.target(for: record), wanted != fallback {
            err = ServiceError(
                .invalidReplyTo,
                "the reply could not be written to the reply-to topic; the request was handled: repeat it with the same request_id and a writable reply-to to get its reply")
        } else {
            err = ServiceError(.internalError, "the reply could not be sent; it was recorded for the operators")
        }
        metrics?.record(action: RequestOutcome.metricsAction(action), outcome: err.code.rawValue, latency: .zero)
        metrics?.deadLettered()
        var reply = routing.reply(to: record, topic: fallback, value: Reply.error(requestId: rid, action: action, err).bytes)
        if tooLarge {
            // The broker's limit may be below ours (a topic's max.message.bytes): what came with the
            // request (a long key, large correlation headers) may be what it refused. Keep only small ones.
            if (reply.key?.count ?? 0) > Self.smallFrameBytes { reply.key = nil }
            reply.headers.removeAll { KafkaHeader.bytes(of: [$0]) > Self.smallFrameBytes }
        }
        return [reply, routing.deadLetter(record, error: "reply refused: \(error)", kind: .replyRefused)]
    }

    /// request_id and action of a request record as far as they can be read, for error replies.
    private func identity(of record: KafkaRecord) -> (String?, String?) {
        topics.requestKind(ofTopic: record.topic).map { DecodeStage(topic: $0).decode(record.value).identity } ?? (nil, nil)
    }

    /// Whether `needle` occurs in `haystack` (the test crash switch; never on the normal path).
    static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, haystack.count >= needle.count else { return false }
        for start in 0...(haystack.count - needle.count) where haystack[start] == needle[0] {
            if haystack[start..<(start + needle.count)].elementsEqual(needle) { return true }
        }
        return false
    }

    /// A missing topic is usually a passing state of the cluster (a leader moving, a topic being
    /// re-created by us), except for a client's own reply-to topic: that one may never come, so
    /// its reply falls back to the default topic (`undeliverable`) instead of stalling the partition.
    /// Nor may any other failure of a client's topic (no leader, too few in-sync replicas: each a
    /// `message.timeout.ms` long) hold its partition for ever: after `clientTopicSendAttempts`
    /// failed sends the reply falls back too. Our own topics are retried for as long as it takes.
    public func isRetriable(_ error: any Error, sending output: KafkaOutgoingRecord, failures: Int) -> Bool {
        let ours = topics.specs.contains { $0.name == output.topic }
        if !ours, let e = error as? KafkaError, e.isUnknownTopic { return false }
        if !ours, failures >= Self.clientTopicSendAttempts { return false }
        return isRetriable(error)
    }

    /// The largest key or header a fallback reply for a too-large reply keeps.
    static let smallFrameBytes = 256

    /// Failed sends to a client's reply-to topic before its reply falls back to the default topic.
    static let clientTopicSendAttempts = 5

    public func isRetriable(_ error: any Error) -> Bool {
        if let e = error as? PostgresError { return e.isRetriable }
        if let e = error as? KafkaError { return e.isRetriable }
        return false
    }

    // MARK: Actions

    /// Idempotency key: request_id (scoped by request topic and user), else the record's position
    /// and timestamp. An empty request_id counts as none: it is many serializers' default, and as a
    /// key it would answer every later request of the user with the first one's reply.
    func idempotencyKey(_ request: Request, kind: RequestTopicKind, record: KafkaRecord) -> String {
        if let rid = request.requestId, !rid.isEmpty {
            // PostgreSQL text cannot hold NUL: escape it (and the escape character) so that
            // distinct request ids stay distinct keys.
            let text = rid.utf8.contains(where: { $0 == 0 || $0 == UInt8(ascii: "%") })
                ? rid.replacingOccurrences(of: "%", with: "%25").replacingOccurrences(of: "\u{0}", with: "%00") : rid
            return "\(kind.rawValue)/\(request.command.userId ?? 0)/\(text)"
        }
        // The record's timestamp tells incarnations of a topic apart: after a topic is deleted and
        // re-created its offsets start again at 0, and a new record on a used offset must not get
        // the stored reply of an old one. A redelivery of the same record has the same timestamp.
        return "offset/\(record.topic)/\(record.partition)/\(record.offset)/\(record.timestampMs.map(String.init) ?? "-")"
    }

    /// Runs a decoded request; `budget` is the most bytes its reply may have (paged replies end
    /// early to fit it).
    func execute(_ request: Request, key: String, budget: Int) async throws -> RequestOutcome {
        let rid = request.requestId
        let action = request.command.action
        /// The reply an earlier delivery stored under the key, if any.
        func stored() async throws -> RequestOutcome? {
            try await store.storedReply(key: key).map(RequestOutcome.init(stored:))
        }
        /// Stores the reply unless the key has one already; returns the reply that stands.
        func remember(_ outcome: RequestOutcome) async throws -> RequestOutcome {
            // Replies are built to fit; one that does not is never stored, so that a repeat is not
            // answered with something the broker refuses.
            guard outcome.reply.count <= budget else {
                logger.error("reply of \(outcome.reply.count) bytes exceeds the record budget of \(budget)", metadata: ["action": "\(action)"])
                return .error(requestId: rid, action: action, ServiceError(.internalError, "the reply would be too large to send"))
            }
            return try await persist.remember(key: key, userId: request.command.userId ?? 0, outcome)
        }
        func fail(_ e: ServiceError) async throws -> RequestOutcome {
            let outcome = RequestOutcome.error(requestId: rid, action: action, e)
            // Transient failures are not remembered, so a retry with the same request_id tries
            // again; but a repeat of a request that succeeded earlier still gets that reply.
            if e.code.isTransient { return try await stored() ?? outcome }
            return try await remember(outcome)
        }
        func ok(_ body: [(String, JSON)]) async throws -> RequestOutcome {
            try await remember(.ok(requestId: rid, action: action, body: body))
        }
        func finish(_ result: PersistStage.Result) async throws -> RequestOutcome {
            switch result {
            case .committed(let outcome, let outbox):
                if outbox { outboxWritten() }
                return outcome
            case .alreadyProcessed(let outcome): return outcome
            case .rejected(let e): return try await fail(e)
            case .cartChanged: throw PersistFailure.unexpected("cart changed outside create_order")
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
            // Check (products, stock) on a read of the cart, then order under the cart's lock only
            // if the cart is still what was checked; a concurrent change means checking again.
            for _ in 0..<Self.createOrderAttempts {
                let cart = try await persist.cart(userId: user)
                guard !cart.items.isEmpty else { return try await fail(ServiceError(.cartEmpty, "the cart is empty")) }
                let found: [Int64: Product]
                switch await products.run(cart.items.map(\.productId)) {
                case .failure(let e): return try await fail(e)
                case .success(let p): found = p
                }
                if case .failure(let e) = await inventory.run(cart.items.map { ($0.productId, $0.quantity) }) { return try await fail(e) }
                let result = try await persist.createOrder(key: key, requestId: rid, userId: user, checked: cart, products: found)
                if result != .cartChanged { return try await finish(result) }
            }
            // Not stored (like a transient error): a retry with the same request_id tries again.
            let busy = ServiceError(.invalidRequest, "the cart kept changing while the order was being placed; nothing was ordered, try again")
            return try await stored() ?? .error(requestId: rid, action: action, busy)
        case .listOrders(let user, let limit, let before):
            let envelope = Reply.ok(requestId: rid, action: action, body: [("orders", []), ("next_before_order_id", .int(.max))]).bytes.count
            var page = Page(room: budget - envelope, limit: limit ?? .max)
            var cursor = before
            fetching: while true {
                let chunkSize = min(page.wanted, 500)
                let chunk = try await persist.orders(userId: user, beforeOrderId: cursor, limit: chunkSize + 1)
                for order in chunk.prefix(chunkSize) {
                    guard page.add(order.json) else { break fetching }
                    cursor = order.orderId
                }
                if chunk.count <= chunkSize { break }  // no more orders
                if page.wanted == 0 {
                    page.more = true
                    break
                }
            }
            return try await ok([("orders", .array(page.items)), ("next_before_order_id", page.more ? .optional(cursor) : .null)])
        case .getOrder(let user, let orderId):
            guard let order = try await persist.order(orderId: orderId, userId: user) else {
                return try await fail(ServiceError(.orderNotFound, "order \(orderId) was not found"))
            }
            return try await ok([("order", order.json)])
        case .listCarts(let limit, let after):
            let envelope = Reply.ok(requestId: rid, action: action, body: [("carts", []), ("next_after_cart_id", .int(.max))]).bytes.count
            var page = Page(room: budget - envelope, limit: limit)
            let found = try await store.carts(limit: limit, afterCartId: after)
            var last: Int64?
            for cart in found.carts {
                guard page.add(cart.json) else { break }
                last = cart.cartId
            }
            if !page.more, found.more { page.more = true }
            return try await ok([("carts", .array(page.items)), ("next_after_cart_id", page.more ? .optional(last) : .null)])
        }
    }

    /// `inventory_deduction_results`: moves the order to confirmed/rejected. Nothing is replied;
    /// a result that breaks the contract goes to the dead-letter topic.
    func handleDeductionResult(_ record: KafkaRecord) async throws -> [KafkaOutgoingRecord] {
        guard let value = record.value, let json = try? JSON.parse(value), case .int(let orderId)? = json["order_id"], orderId >= 1,
            case .string(let status)? = json["status"], status == "deducted" || status == "insufficient"
        else {
            return [routing.deadLetter(
                record, error: "not a deduction result: needs order_id ≥ 1 and status deducted|insufficient", kind: .invalidDeductionResult)]
        }
        // A result that names another order's request cannot be trusted for either order.
        switch json["request_id"] {
        case nil, .null?: break
        case .string(let id)? where id == "deduct-\(orderId)": break
        default:
            return [routing.deadLetter(record, error: "deduction result for order \(orderId) carries another request_id", kind: .invalidDeductionResult)]
        }
        if try await persist.finishOrder(orderId: orderId, status: status == "deducted" ? .confirmed : .rejected) {
            outboxWritten()
        }
        return []
    }
}

/// The items of a paged reply: as many as fit in `room` bytes (and at most `limit`). An item
/// that does not fit ends the page early (`more`), so that paging still reaches every item.
struct Page {
    private(set) var items: [JSON] = []
    private var room: Int
    private(set) var wanted: Int
    var more = false

    init(room: Int, limit: Int) {
        self.room = room
        self.wanted = limit
    }

    /// Adds the item if it fits; false (and `more`) when it does not.
    mutating func add(_ item: JSON) -> Bool {
        let size = item.bytes.count + (items.isEmpty ? 0 : 1)  // the comma before it
        guard wanted > 0, size <= room else {
            more = true
            return false
        }
        room -= size
        wanted -= 1
        items.append(item)
        return true
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

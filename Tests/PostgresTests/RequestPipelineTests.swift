import Foundation
import Kafka
import Logging
import Postgres
import Synchronization
import TestSupport
import Testing

@testable import OrderCore

/// The pipeline as a unit over the real database, with scripted Product and Inventory answers:
/// the money bound, deduction results that break the contract, replies the broker refuses, and
/// list_orders pages that fit the record budget.
@Suite("RequestPipeline (PostgreSQL)", .timeLimit(.minutes(2)))
struct RequestPipelineTests {
    /// Product details the fake Product Service answers with; changeable during a test.
    final class Catalog: ProductCatalog {
        let products = Mutex<[Int64: Product]>([:])
        func set(_ p: Product) { products.withLock { $0[p.productId] = p } }
        func lookup(_ ids: [Int64]) async throws(UpstreamFailure) -> ProductLookup {
            let known = products.withLock { $0 }
            var found: [Int64: Product] = [:]
            for id in ids { found[id] = known[id] }
            return ProductLookup(products: found, notFound: ids.filter { found[$0] == nil })
        }
    }

    struct PlentyInStock: InventoryChecker {
        func check(_ lines: [(productId: Int64, quantity: Int)]) async throws(UpstreamFailure) -> [StockLine] {
            lines.map { StockLine(productId: $0.productId, requested: $0.quantity, available: 1_000_000) }
        }
    }

    /// The repository's topics.yaml.
    let topics: Topics

    init() throws {
        topics = try Topics.load(path: TestSystem.repoRoot + "/topics.yaml")
    }

    func withPipeline(maxRecordBytes: Int = Limits.defaultMaxRecordBytes, _ body: (RequestPipeline, Catalog) async throws -> Void) async throws {
        let topics = self.topics
        try await TestDatabase.withClient(poolSize: 4) { client in
            _ = try await MigrationRunner(client: client, logger: TestDatabase.logger, table: OrderSchema.migrationsTable)
                .migrate(OrderSchema.migrations)
            let catalog = Catalog()
            var logger = Logger(label: "pipeline-test")
            logger.logLevel = .critical
            let pipeline = RequestPipeline(
                topics: topics, routing: ReplyRouting(topics: topics, maxRecordBytes: maxRecordBytes), catalog: catalog,
                inventory: PlentyInStock(), store: OrderStore(db: client), logger: logger)
            try await body(pipeline, catalog)
        }
    }

    /// Requests without request_id are keyed by offset: offsets no earlier run used.
    static let offsets = Atomic<Int64>(Int64.random(in: 1...(1 << 50)))

    func record(_ topic: String, _ body: JSON, key: String? = nil, headers: [KafkaHeader] = []) -> KafkaRecord {
        KafkaRecord(
            topic: topic, partition: 0, offset: Self.offsets.add(1, ordering: .relaxed).newValue, key: key.map { Array($0.utf8) },
            value: body.bytes, headers: headers)
    }

    func ask(_ pipeline: RequestPipeline, _ topic: String, _ body: JSON) async throws -> JSON {
        let outputs = try await pipeline.handle(record(topic, body))
        let reply = try #require(outputs.first)
        return try JSON.parse(reply.value ?? [])
    }

    func user() -> Int64 { TestCatalog.uniqueUserId() }

    func product(_ id: Int64, _ price: String, name: String = "Thing") throws -> Product {
        let amount = try #require(Money(price))
        return try #require(Product(productId: id, name: name, price: amount))
    }

    @Test func idempotencyKeysScopeRequestIdsAndTellTopicIncarnationsApart() async throws {
        try await withPipeline { pipeline, _ in
            func key(_ rid: String?, user: Int64 = 7, kind: RequestTopicKind = .cart, offset: Int64 = 5, timestamp: Int64? = 1_000) -> String {
                let r = KafkaRecord(topic: "cart_requests", partition: 2, offset: offset, key: nil, value: nil, headers: [], timestampMs: timestamp)
                return pipeline.idempotencyKey(Request(requestId: rid, command: .getCart(userId: user)), kind: kind, record: r)
            }
            #expect(key("abc") == "cart/7/abc")
            #expect(key("abc", user: 8) != key("abc"))
            #expect(key("abc", kind: .order) != key("abc"))
            // NUL cannot be stored in text: escaped so that distinct ids stay distinct.
            #expect(Set([key("a\u{0}"), key("a%00"), key("a%2500"), key("a%")]).count == 4)
            // Without request_id: the record's position and timestamp.
            #expect(key(nil) == "offset/cart_requests/2/5/1000")
            #expect(key(nil) == key(nil), "a redelivery of the same record has the same key")
            #expect(key(nil, timestamp: 2_000) != key(nil), "a re-created topic's record on a used offset is another request")
            #expect(key(nil, offset: 6) != key(nil))
            #expect(key(nil, timestamp: nil) == "offset/cart_requests/2/5/-")
            // An empty request_id (a serializer's default) is none: not one key for all of a user's requests.
            #expect(key("") == key(nil))
            #expect(key("", offset: 6) != key(""))
        }
    }

    @Test func aBrokenRecordWithABadReplyToIsAnsweredThereAndStillDeadLettered() async throws {
        try await withPipeline { pipeline, _ in
            let broken = KafkaRecord(
                topic: topics.cartRequests, partition: 0, offset: 1, key: Array("1".utf8), value: Array("{broken".utf8),
                headers: [KafkaHeader("reply-to", topics.cartRequests)])
            let outputs = try await pipeline.handle(broken)
            #expect(outputs.map(\.topic) == [topics.name("cart_responses"), topics.deadLetters])
            #expect(try JSON.parse(outputs[0].value ?? [])["error"]?["code"]?.string == "invalid_reply_to")
            // A well-formed one with the same header is only answered.
            let wellFormed = KafkaRecord(
                topic: topics.cartRequests, partition: 0, offset: 2, key: Array("1".utf8), value: Array(#"{"action":"get_cart","user_id":1}"#.utf8),
                headers: [KafkaHeader("reply-to", topics.cartRequests)])
            #expect(try await pipeline.handle(wellFormed).map(\.topic) == [topics.name("cart_responses")])
        }
    }

    @Test func addItemBeyondTheLargestTotalIsInvalidAndChangesNothing() async throws {
        try await withPipeline { pipeline, catalog in
            let u = user()
            catalog.set(try product(1, "999999999999.99"))
            let r = try await ask(pipeline, "cart_requests", ["request_id": "a", "action": "add_item", "user_id": .int(u), "product_id": 1, "quantity": 10_000])
            #expect(r["error"]?["code"]?.string == "invalid_request")
            let cart = try await ask(pipeline, "cart_requests", ["action": "get_cart", "user_id": .int(u)])
            #expect(cart["cart"]?["cart_id"] == .null)
        }
    }

    @Test func createOrderWhoseTotalAtCurrentPricesPassesTheBoundIsInvalidAndKeepsTheCart() async throws {
        try await withPipeline { pipeline, catalog in
            let u = user()
            catalog.set(try product(11, "100000000000.00"))
            catalog.set(try product(12, "100000000000.00"))
            for id in [11, 12] {
                let r = try await ask(pipeline, "cart_requests", ["action": "add_item", "user_id": .int(u), "product_id": .int(Int64(id)), "quantity": 4])
                #expect(r["status"]?.string == "ok", "\(r.text)")
            }
            // The prices rise between add_item and create_order: 2 × 4 × 200,000,000,000 passes the bound.
            catalog.set(try product(11, "200000000000.00"))
            catalog.set(try product(12, "200000000000.00"))
            let r = try await ask(pipeline, "order_requests", ["action": "create_order", "user_id": .int(u)])
            #expect(r["error"]?["code"]?.string == "invalid_request", "\(r.text)")
            let cart = try await ask(pipeline, "cart_requests", ["action": "get_cart", "user_id": .int(u)])
            #expect(cart["cart"]?["items"]?.array?.count == 2)
            let orders = try await ask(pipeline, "order_requests", ["action": "list_orders", "user_id": .int(u)])
            #expect(orders["orders"]?.array?.isEmpty == true)
        }
    }

    @Test func deductionResultsThatBreakTheContractAreDeadLetteredAndChangeNothing() async throws {
        try await withPipeline { pipeline, catalog in
            let u = user()
            catalog.set(try product(21, "1.00"))
            _ = try await ask(pipeline, "cart_requests", ["action": "add_item", "user_id": .int(u), "product_id": 21, "quantity": 1])
            let created = try await ask(pipeline, "order_requests", ["action": "create_order", "user_id": .int(u)])
            let orderId = try #require(created["order"]?["order_id"]?.int)
            let broken: [JSON] = [
                ["order_id": 0, "status": "deducted"], ["order_id": -1, "status": "deducted"],
                ["order_id": .string(String(orderId)), "status": "deducted"], ["order_id": .number("\(orderId).0"), "status": "deducted"],
                ["order_id": .int(orderId), "status": "DEDUCTED"], ["order_id": .int(orderId)], ["status": "deducted"],
                ["request_id": .string("deduct-\(orderId + 1)"), "order_id": .int(orderId), "status": "deducted"],
                ["request_id": 5, "order_id": .int(orderId), "status": "deducted"], "deducted", .null,
            ]
            for result in broken {
                let outputs = try await pipeline.handle(record(topics.deductionResults, result))
                #expect(outputs.map(\.topic) == [topics.deadLetters], "\(result.text)")
            }
            var order = try await ask(pipeline, "order_requests", ["action": "get_order", "user_id": .int(u), "order_id": .int(orderId)])
            #expect(order["order"]?["status"]?.string == "pending")
            let good = try await pipeline.handle(
                record(topics.deductionResults, ["request_id": .string("deduct-\(orderId)"), "order_id": .int(orderId), "status": "deducted"]))
            #expect(good.isEmpty)
            order = try await ask(pipeline, "order_requests", ["action": "get_order", "user_id": .int(u), "order_id": .int(orderId)])
            #expect(order["order"]?["status"]?.string == "confirmed")
        }
    }

    @Test func aRepeatedCreateOrderGetsTheSameReplyAndCreatesOneOrder() async throws {
        try await withPipeline { pipeline, catalog in
            let u = user()
            catalog.set(try product(51, "3.00"))
            _ = try await ask(pipeline, "cart_requests", ["action": "add_item", "user_id": .int(u), "product_id": 51, "quantity": 2])
            let request: JSON = ["request_id": "once", "action": "create_order", "user_id": .int(u)]
            let first = try await pipeline.handle(record(topics.orderRequests, request))
            // Something new in the cart, then the same request again: the stored reply, no second order.
            _ = try await ask(pipeline, "cart_requests", ["action": "add_item", "user_id": .int(u), "product_id": 51, "quantity": 1])
            let second = try await pipeline.handle(record(topics.orderRequests, request))
            #expect(first.first?.value == second.first?.value)
            let orders = try await ask(pipeline, "order_requests", ["action": "list_orders", "user_id": .int(u)])
            #expect(orders["orders"]?.array?.count == 1)
            let cart = try await ask(pipeline, "cart_requests", ["action": "get_cart", "user_id": .int(u)])
            #expect(cart["cart"]?["items"]?.array?.first?["quantity"]?.int == 1, "the line added afterwards stays in the cart")
        }
    }

    @Test func aDeductionResultTakesEffectOnceAndALaterOneChangesNothing() async throws {
        try await withPipeline { pipeline, catalog in
            let u = user()
            catalog.set(try product(52, "1.00"))
            _ = try await ask(pipeline, "cart_requests", ["action": "add_item", "user_id": .int(u), "product_id": 52, "quantity": 1])
            let created = try await ask(pipeline, "order_requests", ["action": "create_order", "user_id": .int(u)])
            let orderId = try #require(created["order"]?["order_id"]?.int)
            let first = try await pipeline.handle(
                record(topics.deductionResults, ["request_id": .string("deduct-\(orderId)"), "order_id": .int(orderId), "status": "deducted"]))
            #expect(first.isEmpty)
            let results: [JSON] = [
                ["request_id": .string("deduct-\(orderId)"), "order_id": .int(orderId), "status": "deducted"],
                ["request_id": .string("deduct-\(orderId)"), "order_id": .int(orderId), "status": "insufficient"],
            ]
            for result in results {
                let outputs = try await pipeline.handle(record(topics.deductionResults, result))
                #expect(outputs.isEmpty)
            }
            let order = try await ask(pipeline, "order_requests", ["action": "get_order", "user_id": .int(u), "order_id": .int(orderId)])
            #expect(order["order"]?["status"]?.string == "confirmed", "a repeated or contradicting result changes nothing")
            #expect(try await !pipeline.persist.finishOrder(orderId: orderId, status: .rejected), "only a pending order moves")
        }
    }

    @Test func aRefusedReplyIsAnsweredSmallOnTheDefaultTopic() async throws {
        try await withPipeline { pipeline, _ in
            let request = record(
                topics.cartRequests, ["request_id": "r-9", "action": "get_cart", "user_id": 5], key: "5",
                headers: [KafkaHeader("reply-to", topics.name("order_responses")), KafkaHeader("correlation-id", "c-9")])
            let missingTopic = KafkaError(code: 3, message: "UNKNOWN_TOPIC_OR_PART", isRetriable: true)  // as librdkafka reports it
            var outputs = pipeline.undeliverable(request, error: missingTopic)
            #expect(outputs.map(\.topic) == [topics.name("cart_responses"), topics.deadLetters])
            var reply = try JSON.parse(outputs[0].value ?? [])
            #expect(reply["error"]?["code"]?.string == "invalid_reply_to")
            #expect(reply["request_id"]?.string == "r-9")
            #expect(outputs[0].headers.first { $0.key == "correlation-id" }?.stringValue == "c-9")
            // A client's reply-to topic that is missing is not waited for (it may never come);
            // the service's own topics are (a leader moving, a topic being re-created).
            let toClient = KafkaOutgoingRecord(topic: "client-inbox", key: nil, value: [], headers: [])
            let toOwn = KafkaOutgoingRecord(topic: topics.name("cart_responses"), key: nil, value: [], headers: [])
            #expect(!pipeline.isRetriable(missingTopic, sending: toClient, failures: 1))
            #expect(pipeline.isRetriable(missingTopic, sending: toOwn, failures: 1))
            let timedOut = KafkaError(code: KafkaError.messageTimedOutCode, message: "Local: Message timed out", isRetriable: true)
            #expect(pipeline.isRetriable(timedOut, sending: toClient, failures: 1), "a passing failure is retried for any topic")
            // But a client's topic that keeps failing (no leader, too few in-sync replicas) does
            // not hold the partition for ever; the service's own topics are waited for.
            #expect(!pipeline.isRetriable(timedOut, sending: toClient, failures: 5))
            #expect(pipeline.isRetriable(timedOut, sending: toOwn, failures: 500))
            let tooLarge = KafkaError(code: KafkaError.messageSizeTooLargeCode, message: "too large")
            outputs = pipeline.undeliverable(request, error: tooLarge)
            reply = try JSON.parse(outputs[0].value ?? [])
            #expect(reply["error"]?["code"]?.string == "internal_error")
            #expect(outputs[0].topic == topics.name("cart_responses"))
            #expect(outputs[0].key == Array("5".utf8), "small keys and headers stay")
            #expect(outputs[0].headers.first { $0.key == "correlation-id" }?.stringValue == "c-9")
            // Refused as too large: what came with the request may be what the broker refused
            // (its limit below ours), so large keys and headers stay behind.
            let heavy = record(
                topics.cartRequests, ["request_id": "r-10", "action": "get_cart", "user_id": 5], key: String(repeating: "k", count: 5_000),
                headers: [KafkaHeader("correlation-id", String(repeating: "c", count: 50_000)), KafkaHeader("kafka_correlationId", "small")])
            let small = pipeline.undeliverable(heavy, error: tooLarge)[0]
            #expect(small.key == nil)
            #expect(small.headers.map(\.key) == ["content-type", "kafka_correlationId"])
            #expect(small.payloadBytes < 1_000)
        }
    }

    /// create_order raced by add_item and a second create_order of the same user (different keys,
    /// so different lanes, as with two instances): every acknowledged add ends in the cart or in
    /// exactly one order, no line is ordered twice, and no existing product is "not found".
    @Test func createOrderRacedByCartChangesOrdersExactlyWhatItChecked() async throws {
        try await withPipeline { pipeline, catalog in
            catalog.set(try product(41, "1.00"))
            catalog.set(try product(42, "2.00"))
            let users = (0..<200).map { _ in user() }
            for round in 0..<3 {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for u in users {
                        group.addTask {
                            let first = try await ask(pipeline, "cart_requests", ["request_id": .string("s\(round)"), "action": "add_item", "user_id": .int(u), "product_id": 41, "quantity": 1])
                            #expect(first["status"]?.string == "ok", "\(first.text)")
                            async let o1 = ask(pipeline, "order_requests", ["request_id": .string("o1-\(round)"), "action": "create_order", "user_id": .int(u)])
                            async let added = ask(pipeline, "cart_requests", ["request_id": .string("b\(round)"), "action": "add_item", "user_id": .int(u), "product_id": 42, "quantity": 1])
                            async let o2 = ask(pipeline, "order_requests", ["request_id": .string("o2-\(round)"), "action": "create_order", "user_id": .int(u)])
                            let replies = try await [o1, added, o2]
                            for r in replies {
                                let code = r["error"]?["code"]?.string
                                #expect(code == nil || code == "cart_empty", "\(r.text)")
                            }
                            #expect(replies[1]["status"]?.string == "ok")
                        }
                    }
                    try await group.waitForAll()
                }
            }
            // Every acknowledged add: 3 of product 41 and 3 of product 42 per user, each in the
            // cart or in exactly one order line.
            for u in users {
                let cart = try await ask(pipeline, "cart_requests", ["action": "get_cart", "user_id": .int(u)])
                let orders = try await ask(pipeline, "order_requests", ["action": "list_orders", "user_id": .int(u)])
                var count: [Int64: Int64] = [:]
                for line in cart["cart"]?["items"]?.array ?? [] { count[line["product_id"]?.int ?? 0, default: 0] += line["quantity"]?.int ?? 0 }
                for order in orders["orders"]?.array ?? [] {
                    for line in order["items"]?.array ?? [] { count[line["product_id"]?.int ?? 0, default: 0] += line["quantity"]?.int ?? 0 }
                }
                #expect(count == [41: 3, 42: 3], "user \(u): \(cart.text) \(orders.text)")
            }
        }
    }

    /// A user whose orders pass the record budget: the first page fits and says where to go on;
    /// following `next_before_order_id` reaches every order once, newest first.
    @Test func listOrdersPagesFitTheBudgetAndReachEveryOrder() async throws {
        // The smallest record size the configuration allows.
        let limit = ReplyRouting.minimumMaxRecordBytes
        try await withPipeline(maxRecordBytes: limit) { pipeline, catalog in
            let u = user()
            let name = String(repeating: "n", count: Product.maxNameBytes)
            let lines = Int64(Limits.maxCartLines)
            for id in 1...lines { catalog.set(try product(100 + id, "2.50", name: name)) }
            var created: [Int64] = []
            for _ in 0..<12 {  // full carts, ~57 KB per order: about 9 orders per 512 KiB page
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for id in 1...lines {
                        group.addTask {
                            _ = try await ask(pipeline, "cart_requests", ["action": "add_item", "user_id": .int(u), "product_id": .int(100 + id), "quantity": 1])
                        }
                    }
                    try await group.waitForAll()
                }
                let r = try await ask(pipeline, "order_requests", ["action": "create_order", "user_id": .int(u)])
                created.append(try #require(r["order"]?["order_id"]?.int))
            }
            var seen: [Int64] = []
            var before: JSON = .null
            var pages = 0
            repeat {
                let outputs = try await pipeline.handle(record(topics.orderRequests, ["action": "list_orders", "user_id": .int(u), "before_order_id": before], key: String(u)))
                let reply = try #require(outputs.first)
                #expect(reply.payloadBytes <= limit - ReplyRouting.framingBytes)
                let json = try JSON.parse(reply.value ?? [])
                seen += (json["orders"]?.array ?? []).compactMap { $0["order_id"]?.int }
                before = json["next_before_order_id"] ?? .null
                pages += 1
            } while before != .null && pages < 10
            #expect(pages >= 2)
            #expect(seen == created.reversed())
            let limited = try await ask(pipeline, "order_requests", ["action": "list_orders", "user_id": .int(u), "limit": 3])
            #expect(limited["orders"]?.array?.compactMap { $0["order_id"]?.int } == Array(created.reversed().prefix(3)))
            #expect(limited["next_before_order_id"]?.int == created.reversed()[2])
        }
    }
}

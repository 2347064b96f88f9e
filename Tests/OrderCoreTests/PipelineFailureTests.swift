import Kafka
import Logging
import Postgres
import Testing

@testable import OrderCore

/// `RequestPipeline.failure()`: the internal_error reply and the dead-letter copy. Nothing here
/// touches the database (the store's pool opens connections only when used) or a broker.
@Suite("RequestPipeline.failure: internal_error reply and dead-letter copy", .timeLimit(.minutes(2)))
struct PipelineFailureTests {
    private struct NoCatalog: ProductCatalog {
        func lookup(_ productIds: [Int64]) async throws(UpstreamFailure) -> ProductLookup {
            throw .unavailable(service: "product", reason: "not in this test")
        }
    }
    private struct NoInventory: InventoryChecker {
        func check(_ lines: [(productId: Int64, quantity: Int)]) async throws(UpstreamFailure) -> [StockLine] {
            throw .unavailable(service: "inventory", reason: "not in this test")
        }
    }
    private struct Boom: Error, CustomStringConvertible {
        var description: String { "boom: the handler broke" }
    }

    let topics = Fixture.topics()
    let metrics = ServiceMetrics()

    func pipeline() -> RequestPipeline {
        var logger = Logger(label: "failure-test")
        logger.logLevel = .critical
        let unused = PostgresClient(configuration: PostgresConfiguration(url: "postgresql://nobody@127.0.0.1:1/none"), logger: logger)
        return RequestPipeline(
            topics: topics, routing: ReplyRouting(topics: topics, allowList: ["client-*"]), catalog: NoCatalog(),
            inventory: NoInventory(), store: OrderStore(db: unused), metrics: metrics, logger: logger)
    }

    func record(_ topic: String, _ value: String?, headers: [KafkaHeader] = [], offset: Int64 = 41) -> KafkaRecord {
        KafkaRecord(topic: topic, partition: 2, offset: offset, key: Array("42".utf8), value: value.map { Array($0.utf8) }, headers: headers)
    }

    func header(_ r: KafkaOutgoingRecord, _ name: String) -> String? { r.headers.last { $0.key == name }?.stringValue }

    func checkDeadLetter(_ copy: KafkaOutgoingRecord, of record: KafkaRecord, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(copy.topic == topics.deadLetters, sourceLocation: sourceLocation)
        #expect(copy.value == record.value, "the copy keeps the request's value", sourceLocation: sourceLocation)
        #expect(copy.key == record.key, sourceLocation: sourceLocation)
        #expect(header(copy, "dlq-source-topic") == record.topic, sourceLocation: sourceLocation)
        #expect(header(copy, "dlq-source-partition") == "2", sourceLocation: sourceLocation)
        #expect(header(copy, "dlq-source-offset") == String(record.offset), sourceLocation: sourceLocation)
        #expect(header(copy, "dlq-error") == "internal error: boom: the handler broke", sourceLocation: sourceLocation)
    }

    @Test func aRequestGetsAnInternalErrorReplyOnItsDefaultTopicWithItsIdAndActionAndADeadLetterCopy() throws {
        let r = record(
            "order_requests", #"{"request_id":"r-77","action":"create_order","user_id":42}"#,
            headers: [KafkaHeader("correlation-id", "c-9"), KafkaHeader("x-other", "not copied")])
        let out = pipeline().failure(r, error: Boom())
        try #require(out.count == 2)
        #expect(out[0].topic == "order_responses")
        #expect(out[0].key == r.key)
        #expect(header(out[0], "correlation-id") == "c-9")
        #expect(header(out[0], "x-other") == nil)
        let reply = try JSON.parse(out[0].value ?? [])
        #expect(reply["request_id"] == .string("r-77"))
        #expect(reply["action"] == .string("create_order"))
        #expect(reply["status"] == .string("error"))
        #expect(reply["error"]?["code"] == .string("internal_error"))
        guard case .string(let message)? = reply["error"]?["message"] else { Issue.record("no error message"); return }
        #expect(!message.contains("boom"), "the client is not told the internal error")
        checkDeadLetter(out[1], of: r)
        #expect(header(out[1], "correlation-id") == "c-9", "the copy keeps the request's headers")
    }

    @Test func theReplyGoesToAnAllowedReplyToTopic() throws {
        let r = record("cart_requests", #"{"request_id":"r-1","action":"get_cart","user_id":42}"#, headers: [KafkaHeader("reply-to", "client-7")])
        let out = pipeline().failure(r, error: Boom())
        try #require(out.count == 2)
        #expect(out[0].topic == "client-7")
        #expect(try JSON.parse(out[0].value ?? [])["request_id"] == .string("r-1"))
        checkDeadLetter(out[1], of: r)
    }

    @Test(arguments: ["order_service_dlq", "cart_requests", "not allowed", ""])
    func aReplyToTopicThatIsNotAllowedFallsBackToTheDefaultTopic(_ replyTo: String) throws {
        let r = record("cart_requests", #"{"request_id":"r-2","action":"get_cart","user_id":42}"#, headers: [KafkaHeader("reply-to", replyTo)])
        let out = pipeline().failure(r, error: Boom())
        try #require(out.count == 2)
        #expect(out[0].topic == "cart_responses")
        #expect(try JSON.parse(out[0].value ?? [])["error"]?["code"] == .string("internal_error"))
        checkDeadLetter(out[1], of: r)
    }

    @Test func aValueThatIsNotARequestIsAnsweredWithoutIdOrAction() throws {
        for value in ["not json", nil] as [String?] {
            let r = record("cart_requests", value)
            let out = pipeline().failure(r, error: Boom())
            try #require(out.count == 2)
            #expect(out[0].topic == "cart_responses")
            let reply = try JSON.parse(out[0].value ?? [])
            #expect(reply["request_id"] == nil || reply["request_id"] == .null)
            #expect(reply["error"]?["code"] == .string("internal_error"))
            checkDeadLetter(out[1], of: r)
        }
    }

    @Test func aDeductionResultGetsOnlyADeadLetterCopy() throws {
        let r = record("inventory_deduction_results", #"{"request_id":"o-5","success":true}"#)
        let out = pipeline().failure(r, error: Boom())
        try #require(out.count == 1)
        checkDeadLetter(out[0], of: r)
    }

    @Test func theFailureIsCountedAsInternalErrorAndADeadLetter() throws {
        let p = pipeline()
        _ = p.failure(record("cart_requests", #"{"request_id":"r-3","action":"add_item","user_id":1,"product_id":2,"quantity":1}"#), error: Boom())
        _ = p.failure(record("cart_requests", "{"), error: Boom())
        let report = metrics.report(instance: "t", inFlight: 0)
        #expect(report["requests"]?["add_item/internal_error"] == .int(1))
        #expect(report["requests"]?["malformed/internal_error"] == .int(1))
        #expect(report["dead_letters"] == .int(2))
    }
}

import Foundation
import Kafka
import Logging
import OrderCore
import Synchronization
import TestSupport
import Testing

/// `UpstreamClient` against librdkafka's in-process mock cluster: its reply consumer is real, its
/// request producer a fake that lets each test decide what comes back on the reply topic.
@Suite("UpstreamClient: replies, timeouts, bounds (mock cluster)", .timeLimit(.minutes(2)))
struct UpstreamClientTests {
    /// A request producer: counts requests and hands each to the test's `answer`.
    final class Requests: RecordSender {
        let sent = Mutex<[KafkaOutgoingRecord]>([])
        let answer: @Sendable (KafkaOutgoingRecord) async throws -> Void
        init(_ answer: @escaping @Sendable (KafkaOutgoingRecord) async throws -> Void = { _ in }) { self.answer = answer }
        var count: Int { sent.withLock { $0.count } }
        func send(_ record: KafkaOutgoingRecord) async throws -> DeliveryReport {
            sent.withLock { $0.append(record) }
            try await answer(record)
            return DeliveryReport(topic: record.topic, partition: 0, offset: 0)
        }
    }

    /// A mock cluster with the reply topic, and a producer writing replies to it.
    final class Cluster: Sendable {
        let cluster: KafkaMockCluster
        let producer: KafkaProducer
        let logger = TestKafka.logger(level: .critical)
        static let replies = "product_details"

        init() throws {
            cluster = try KafkaMockCluster(logger: logger)
            try cluster.createTopic(Self.replies, partitions: 2)
            producer = try KafkaProducer(configuration: KafkaConfiguration(["bootstrap.servers": cluster.bootstrapServers]), logger: logger)
        }

        /// Writes a reply to partition 0 (so replies are read in the order they were written).
        func reply(correlation: String?, _ value: String?) async throws {
            _ = try await producer.send(KafkaOutgoingRecord(
                topic: Self.replies, partition: 0, key: nil, value: value.map { Array($0.utf8) },
                headers: correlation.map { [KafkaHeader("correlation-id", $0)] } ?? []))
        }

        func client(_ requests: Requests, timeout: Duration = .seconds(30), maxPending: Int = 100) async throws -> UpstreamClient {
            let client = try UpstreamClient(
                producer: requests, consumerConfiguration: KafkaConfiguration(["bootstrap.servers": cluster.bootstrapServers]),
                replyTopics: [Self.replies], instanceId: "me-\(UUID().uuidString.prefix(6))", timeout: timeout, maxPending: maxPending,
                logger: logger)
            try await client.start()
            return client
        }

        func close() async { await producer.close() }
    }

    static func correlation(_ r: KafkaOutgoingRecord) -> String { r.headers.first { $0.key == "correlation-id" }?.stringValue ?? "" }

    func ask(_ client: UpstreamClient) async -> Result<JSON, UpstreamFailure> {
        do {
            return .success(try await client.request(service: "product", topic: "get_product_details", replyTopic: Cluster.replies) { id in
                .object([("request_id", .string(id))])
            }.reply)
        } catch {
            return .failure(error)
        }
    }

    @Test func aReplyWithOurCorrelationIdIsDeliveredAndTheRequestCarriesTheHeaders() async throws {
        let c = try Cluster()
        let requests = Requests { r in try await c.reply(correlation: Self.correlation(r), #"{"answer":"ours"}"#) }
        let client = try await c.client(requests)
        let result = try await TestKafka.within(.seconds(30), "request") { await ask(client) }
        #expect(try result.get()["answer"] == .string("ours"))
        let sent = try #require(requests.sent.withLock { $0.first })
        #expect(sent.topic == "get_product_details")
        #expect(sent.headers.first { $0.key == "reply-to" }?.stringValue == Cluster.replies)
        #expect(try JSON.parse(sent.value ?? [])["request_id"] == .string(Self.correlation(sent)))
        #expect(client.pendingCount == 0)
        await client.close()
        await c.close()
    }

    @Test func repliesForOtherInstancesCorrelationIdsAreIgnored() async throws {
        let c = try Cluster()
        let requests = Requests { r in
            let ours = Self.correlation(r)
            // Another instance's reply first, even one whose body names our id: the header decides.
            try await c.reply(correlation: "other-instance-1", #"{"request_id":"\#(ours)","answer":"theirs"}"#)
            try await c.reply(correlation: "other-instance-2", "not json at all")
            try await c.reply(correlation: ours, #"{"answer":"ours"}"#)
        }
        let client = try await c.client(requests)
        let result = try await TestKafka.within(.seconds(30), "request") { await ask(client) }
        #expect(try result.get()["answer"] == .string("ours"))
        await client.close()
        await c.close()
    }

    @Test func aReplyWithoutCorrelationHeaderIsMatchedByItsRequestId() async throws {
        let c = try Cluster()
        let requests = Requests { r in
            try await c.reply(correlation: nil, #"{"request_id":"someone-else-9","answer":"theirs"}"#)
            try await c.reply(correlation: nil, #"{"request_id":"\#(Self.correlation(r))","answer":"ours"}"#)
        }
        let client = try await c.client(requests)
        let result = try await TestKafka.within(.seconds(30), "request") { await ask(client) }
        #expect(try result.get()["answer"] == .string("ours"))
        await client.close()
        await c.close()
    }

    @Test(arguments: ["[1,2]", "not json", "\"a string\"", "42", nil])
    func aReplyThatIsOursButNotAJSONObjectFailsAtOnce(_ value: String?) async throws {
        let c = try Cluster()
        let requests = Requests { r in try await c.reply(correlation: Self.correlation(r), value) }
        let client = try await c.client(requests, timeout: .seconds(60))
        let started = ContinuousClock.now
        let result = try await TestKafka.within(.seconds(30), "request") { await ask(client) }
        guard case .failure(.badReply(_, let reason)) = result else {
            Issue.record("expected badReply, got \(result)")
            return
        }
        #expect(reason.contains("not a JSON object"))
        #expect(ContinuousClock.now - started < .seconds(30), "not the 60 s timeout")
        #expect(client.pendingCount == 0)
        await client.close()
        await c.close()
    }

    @Test func aLateReplyIsDroppedAndLaterRequestsGetTheirOwnReplies() async throws {
        let c = try Cluster()
        let late = Mutex<String?>(nil)
        let requests = Requests { r in
            let id = Self.correlation(r)
            let isFirst = late.withLock { first -> Bool in
                guard first == nil else { return false }
                first = id
                return true
            }
            if isFirst { return }  // the first: no answer in time
            try await c.reply(correlation: id, #"{"answer":"second"}"#)
        }
        let client = try await c.client(requests, timeout: .seconds(8))  // room for the next replies on a loaded machine
        let first = await ask(client)
        #expect(first.failure == .timeout(service: "product"))
        #expect(client.pendingCount == 0, "the timed-out request no longer waits")
        // Its reply comes after all, then the next request's reply.
        try await c.reply(correlation: try #require(late.withLock { $0 }), #"{"answer":"late"}"#)
        let second = try await TestKafka.within(.seconds(30), "second request") { await ask(client) }
        #expect(try second.get()["answer"] == .string("second"))
        // One more round trip: the late reply was read and dropped by now without harm.
        let third = try await TestKafka.within(.seconds(30), "third request") { await ask(client) }
        #expect(try third.get()["answer"] == .string("second"))
        #expect(client.pendingCount == 0)
        await client.close()
        await c.close()
    }

    @Test func closeFailsTheRequestsStillWaiting() async throws {
        let c = try Cluster()
        let requests = Requests()  // never answered
        let client = try await c.client(requests, timeout: .seconds(60))
        let waiting = Task { await ask(client) }
        let other = Task { await ask(client) }
        try await TestKafka.eventually("two requests wait") { client.pendingCount == 2 }
        await client.close()
        let results = try await TestKafka.within(.seconds(10), "waiting requests end") { [await waiting.value, await other.value] }
        for r in results { #expect(r.failure == .unavailable(service: "upstream", reason: "shutting down")) }
        #expect(client.pendingCount == 0)
        await c.close()
    }

    @Test func beyondMaxPendingARequestFailsAtOnceWithoutBeingSent() async throws {
        let c = try Cluster()
        let requests = Requests()  // never answered
        let client = try await c.client(requests, timeout: .seconds(60), maxPending: 2)
        let a = Task { await ask(client) }
        let b = Task { await ask(client) }
        try await TestKafka.eventually("two requests wait") { client.pendingCount == 2 && requests.count == 2 }
        let third = try await TestKafka.within(.seconds(5), "third request") { await ask(client) }
        guard case .failure(.unavailable(let service, let reason)) = third else {
            Issue.record("expected unavailable, got \(third)")
            return
        }
        #expect(service == "product")
        #expect(reason.contains("2 upstream requests are waiting already"))
        #expect(requests.count == 2, "the refused request was not sent")
        #expect(client.pendingCount == 2)
        await client.close()
        _ = await (a.value, b.value)
        await c.close()
    }

    @Test func aRequestThatCannotBeSentFailsAtOnceAsUnavailable() async throws {
        let c = try Cluster()
        let requests = Requests { _ in throw KafkaError(code: 3, message: "UNKNOWN_TOPIC_OR_PART", isRetriable: false) }
        let client = try await c.client(requests, timeout: .seconds(60))
        let result = try await TestKafka.within(.seconds(10), "request") { await ask(client) }
        guard case .failure(.unavailable(let service, let reason)) = result else {
            Issue.record("expected unavailable, got \(result)")
            return
        }
        #expect(service == "product")
        #expect(reason.contains("UNKNOWN_TOPIC_OR_PART"))
        #expect(client.pendingCount == 0)
        await client.close()
        await c.close()
    }
}

extension Result {
    fileprivate var failure: Failure? {
        if case .failure(let e) = self { return e }
        return nil
    }
}

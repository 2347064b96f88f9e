import Kafka
import Logging
import Synchronization
import TestSupport
import Testing

@testable import OrderCore

/// A row the broker refuses must not hold up the outbox: refused for good, it goes to the
/// dead-letter topic and leaves; refused for a passing reason, it stays; either way the rows sent
/// with it are deleted once, not sent again every round.
@Suite("Outbox relay: refused rows (PostgreSQL)", .timeLimit(.minutes(2)))
struct OutboxRefusalTests {
    let topics: Topics
    init() throws { topics = try Topics.load(path: TestSystem.repoRoot + "/topics.yaml") }

    func notification(_ order: Int64) -> OrderStore.OutboxRecord {
        OutgoingMessages.notification(order: order, user: 1, status: .pending, total: .zero, at: "t", topics: topics)
    }

    static func order(_ record: KafkaOutgoingRecord) -> Int64? { try? JSON.parse(record.value ?? [])["order_id"]?.int }

    /// Refuses the records of some orders with the given error; records what it accepted.
    final class RefusingSender: RecordSender {
        let refuse: Mutex<[Int64: KafkaError]>
        let accepted = Mutex<[KafkaOutgoingRecord]>([])
        init(_ refuse: [Int64: KafkaError]) { self.refuse = Mutex(refuse) }
        func send(_ record: KafkaOutgoingRecord) async throws -> DeliveryReport {
            if record.topic != "dead_letter_topic_of_test", let order = OutboxRefusalTests.order(record), let error = refuse.withLock({ $0[order] }) {
                throw error
            }
            accepted.withLock { $0.append(record) }
            return DeliveryReport(topic: record.topic, partition: 0, offset: 0)
        }
    }

    static let tooLarge = KafkaError(code: KafkaError.messageSizeTooLargeCode, message: "Broker: Message size too large")
    static let timedOut = KafkaError(code: KafkaError.messageTimedOutCode, message: "Local: Message timed out", isRetriable: true)

    func relay(_ store: OrderStore, _ sender: RefusingSender) -> OutboxRelay {
        var logger = Logger(label: "outbox-refusal-test")
        logger.logLevel = .critical
        let routing = ReplyRouting(topics: topics)
        return OutboxRelay(
            store: store, producer: sender,
            refusals: OutboxRelay.Refusals(deadLetter: { record, error in
                var copy = routing.deadLetter(unsendable: record, error: error)
                copy.topic = "dead_letter_topic_of_test"
                return copy
            }),
            logger: logger)
    }

    func left(_ store: OrderStore) async throws -> [Int64] {
        try await store.transaction { tx in try await tx.lockOutbox(limit: 100, commitIfNone: true) }.compactMap { Self.order($0.record) }.sorted()
    }

    @Test func aRowRefusedForGoodIsDeadLetteredAndTheOthersGoOnce() async throws {
        try await IsolatedSchema.withStore("outbox_refused") { store in
            try await store.transaction { tx in try await tx.enqueue((1...5).map(notification)) }
            let sender = RefusingSender([3: Self.tooLarge])
            let relay = relay(store, sender)
            #expect(try await relay.relayBatch() == 5)
            #expect(try await left(store) == [])
            let accepted = sender.accepted.withLock { $0 }
            #expect(accepted.filter { $0.topic == topics.notifications }.compactMap(Self.order).sorted() == [1, 2, 4, 5])
            let copy = try #require(accepted.first { $0.topic == "dead_letter_topic_of_test" })
            #expect(Self.order(copy) == 3)
            #expect(copy.headers.first { $0.key == "dlq-source-topic" }?.stringValue == topics.notifications)
            #expect(copy.headers.first { $0.key == "kafka_dlt-exception-fqcn" }?.stringValue == "order_service.Unsendable")
            #expect(copy.headers.first { $0.key == "dlq-error" }?.stringValue?.contains("too large") == true)
            // Nothing is sent again.
            await relay.relayAll()
            #expect(sender.accepted.withLock { $0.count } == 5)
        }
    }

    @Test func aRowRefusedForAPassingReasonStaysAndIsSentLaterAlone() async throws {
        try await IsolatedSchema.withStore("outbox_stalled") { store in
            try await store.transaction { tx in try await tx.enqueue((1...4).map(notification)) }
            let sender = RefusingSender([2: Self.timedOut])
            let relay = relay(store, sender)
            await #expect(throws: OutboxRelay.Stalled.self) { try await relay.relayBatch() }
            #expect(try await left(store) == [2], "the delivered rows are gone, the timed-out one stays")
            sender.refuse.withLock { $0 = [:] }  // the outage is over
            await relay.relayAll()
            #expect(try await left(store) == [])
            let sent = sender.accepted.withLock { $0 }.compactMap(Self.order)
            #expect(sent.sorted() == [1, 2, 3, 4], "each row sent once: \(sent)")
        }
    }
}

import Foundation
import Kafka
import Logging
import Postgres
import Synchronization
import TestSupport
import Testing

@testable import OrderCore

/// One order's notifications leave the outbox in status order whatever instance relays them, and
/// each carries a stable event id. Runs in a schema of its own, so that the relays of services
/// running other tests never take these rows (and this test never takes theirs).
@Suite("Outbox ordering (PostgreSQL)", .timeLimit(.minutes(2)))
struct OutboxOrderingTests {
    func withIsolatedStore(_ body: (OrderStore) async throws -> Void) async throws {
        try await IsolatedSchema.withStore("outbox", body)
    }

    let topics: Topics

    init() throws {
        topics = try Topics.load(path: TestSystem.repoRoot + "/topics.yaml")
    }

    func notification(_ order: Int64, _ status: OrderStatus) -> OrderStore.OutboxRecord {
        OutgoingMessages.notification(order: order, user: 1, status: status, total: .zero, at: "t", topics: topics)
    }

    static func status(_ record: KafkaOutgoingRecord) -> (order: Int64, status: String)? {
        guard let json = try? JSON.parse(record.value ?? []), let order = json["order_id"]?.int, let s = json["status"]?.string else { return nil }
        return (order, s)
    }

    @Test func notificationsCarryAStableEventId() throws {
        let a = notification(9, .confirmed).record
        let b = notification(9, .confirmed).record
        let id = try JSON.parse(a.value ?? [])["event_id"]?.string
        #expect(id == "order-9-confirmed")
        #expect(a.headers.first { $0.key == "event-id" }?.stringValue == id)
        #expect(try JSON.parse(b.value ?? [])["event_id"]?.string == id, "the same status change has the same id when sent again")
        #expect(try JSON.parse(notification(9, .pending).record.value ?? [])["event_id"]?.string == "order-9-pending")
    }

    @Test func aRowWaitsWhileAnOlderRowOfItsOrderIsBeingSentElsewhere() async throws {
        try await withIsolatedStore { store in
            try await store.transaction { tx in
                try await tx.enqueue([notification(1, .pending), notification(2, .pending)])
                try await tx.enqueue([notification(1, .confirmed)])
            }
            // Instance A takes order 1's `pending` and is still sending it.
            try await store.transaction { a in
                let taken = try await a.lockOutbox(limit: 1)
                #expect(taken.compactMap { Self.status($0.record) }.map(\.status) == ["pending"])
                // Instance B sees order 2's `pending`, but not order 1's `confirmed`.
                let other = try await store.transaction { b in try await b.lockOutbox(limit: 10) }
                #expect(other.compactMap { Self.status($0.record) }.map { "\($0.order)/\($0.status)" } == ["2/pending"])
                try await a.deleteOutbox(ids: taken.map(\.id))
            }
            // Once A's row is gone, `confirmed` can go.
            let next = try await store.transaction { b in try await b.lockOutbox(limit: 10) }
            #expect(next.compactMap { Self.status($0.record) }.map { "\($0.order)/\($0.status)" } == ["2/pending", "1/confirmed"])
        }
    }

    /// Records what was sent, in order, with a short random delay per send (as a broker would).
    final class RecordingSender: RecordSender {
        let sent = Mutex<[KafkaOutgoingRecord]>([])
        func send(_ record: KafkaOutgoingRecord) async throws -> DeliveryReport {
            try await Task.sleep(for: .microseconds(Int.random(in: 0...300)))
            sent.withLock { $0.append(record) }
            return DeliveryReport(topic: record.topic, partition: 0, offset: 0)
        }
    }

    @Test func twoRelaysPublishEveryOrdersEventsInStatusOrder() async throws {
        try await withIsolatedStore { store in
            let orders: [Int64] = Array(1...300)
            for chunk in stride(from: 0, to: orders.count, by: 50) {
                try await store.transaction { tx in
                    try await tx.enqueue(orders[chunk..<(chunk + 50)].map { notification($0, .pending) })
                }
            }
            for chunk in stride(from: 0, to: orders.count, by: 50) {
                try await store.transaction { tx in
                    try await tx.enqueue(orders[chunk..<(chunk + 50)].map { notification($0, $0 % 2 == 0 ? .confirmed : .rejected) })
                }
            }
            let sender = RecordingSender()
            var logger = Logger(label: "outbox-test")
            logger.logLevel = .critical
            let relays = (0..<2).map { _ in OutboxRelay(store: store, producer: sender, logger: logger) }
            await withTaskGroup(of: Void.self) { group in
                for relay in relays { group.addTask { _ = try? await relay.relayBatch(limit: 7); await relay.relayAll() } }
            }
            let sent = sender.sent.withLock { $0 }.compactMap(Self.status)
            #expect(sent.count == 600)
            var firstSeen: [Int64: String] = [:]
            for (order, status) in sent where firstSeen[order] == nil { firstSeen[order] = status }
            #expect(firstSeen.values.allSatisfy { $0 == "pending" }, "an order's final status was published before its pending")
            #expect(Set(sent.map(\.order)) == Set(orders))
        }
    }
}

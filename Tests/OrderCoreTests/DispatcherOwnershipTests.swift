import Foundation
import Kafka
import Testing

@testable import OrderCore

/// The dispatcher as the one owner of partition ownership and backpressure: what it accepts from
/// the consumer, and which partitions it tells the consumer to pause and resume.
@Suite("Dispatcher ownership and backpressure", .timeLimit(.minutes(1)))
struct DispatcherOwnershipTests {
    let p0 = TopicPartition("in", 0)
    let p1 = TopicPartition("in", 1)
    let p2 = TopicPartition("in", 2)

    struct PauseCall: Sendable, Equatable {
        var partitions: Set<TopicPartition>
        var paused: Bool
    }

    func make(_ handler: FakeHandler, maxInFlight: Int, pauses: Log<PauseCall>, stored: Log<Stored>) -> Dispatcher {
        Dispatcher(
            handler: handler,
            effects: Dispatcher.Effects(
                send: { _ in }, storeOffset: { tp, next in stored.append(Stored(tp: tp, offset: next)) },
                setPaused: { tps, paused in pauses.append(PauseCall(partitions: Set(tps), paused: paused)) }),
            configuration: fastConfiguration(maxInFlight: maxInFlight), logger: quietLogger())
    }

    @Test func offerTakesOnlyRecordsOfOwnedPartitions() async {
        let handler = FakeHandler()
        let stored = Log<Stored>()
        let d = make(handler, maxInFlight: 100, pauses: Log(), stored: stored)
        d.partitionsAssigned([p0])
        await d.offer(rec(p0, 0, key: "a"))
        await d.offer(rec(p1, 0, key: "a"))  // not ours: its owner handles it
        await d.waitIdle()
        #expect(handler.started.all == ["in/0@0"])
        #expect(stored.all == [Stored(tp: p0, offset: 1)])
    }

    @Test func offerRefusesRecordsOfPartitionsBeingRevoked() async {
        let gates = Gates()
        let handler = FakeHandler { r, _ in await gates.wait(rid(r)) }
        let d = make(handler, maxInFlight: 100, pauses: Log(), stored: Log())
        d.partitionsAssigned([p0, p1])
        await d.offer(rec(p0, 0, key: "a"))
        await eventually("record 0 started") { handler.started.count == 1 }
        let revoked = Flag()
        Thread {
            d.partitionsRevoking([p0], timeout: .seconds(30))
            revoked.set()
        }.start()
        await eventually("p0 being revoked") { !d.isOwned(p0) }
        await d.offer(rec(p0, 1, key: "b"))  // arrived during the revoke: dropped
        await d.offer(rec(p1, 0, key: "c"))  // another partition: still taken
        #expect(await d.inFlightCount == 2)
        #expect(!revoked.isSet)
        await gates.open("in/0@0")
        await gates.open("in/1@0")
        await eventually("revoke returned") { revoked.isSet }
        await d.waitIdle()
        #expect(Set(handler.started.all) == ["in/0@0", "in/1@0"])
    }

    @Test func theInFlightLimitPausesTheOwnedPartitionsAndNewlyAssignedOnes() async {
        let gates = Gates()
        let handler = FakeHandler { r, _ in await gates.wait(rid(r)) }
        let pauses = Log<PauseCall>()
        let d = make(handler, maxInFlight: 2, pauses: pauses, stored: Log())
        d.partitionsAssigned([p0, p1])
        #expect(pauses.all.isEmpty)
        await d.offer(rec(p0, 0, key: "a"))
        await d.offer(rec(p1, 0, key: "b"))
        #expect(pauses.all == [PauseCall(partitions: [p0, p1], paused: true)])
        // A rebalance forgets pauses: partitions assigned while the limit holds are paused too.
        d.partitionsAssigned([p2])
        #expect(pauses.all.last == PauseCall(partitions: [p2], paused: true))
        await gates.open("in/0@0")
        await gates.open("in/1@0")
        await d.waitIdle()
        #expect(pauses.all.last == PauseCall(partitions: [p0, p1, p2], paused: false))
        // Not paused: a new assignment is left alone.
        let before = pauses.count
        d.partitionsAssigned([TopicPartition("in", 3)])
        #expect(pauses.count == before)
    }

    @Test func largeRecordsPauseAtTheByteBoundLongBeforeTheCountBound() async {
        let gates = Gates()
        let handler = FakeHandler { r, _ in await gates.wait(rid(r)) }
        let pauses = Log<PauseCall>()
        var config = fastConfiguration(maxInFlight: 100)
        config.maxInFlightBytes = 2_500
        let d = Dispatcher(
            handler: handler,
            effects: Dispatcher.Effects(
                send: { _ in }, storeOffset: { _, _ in },
                setPaused: { tps, paused in pauses.append(PauseCall(partitions: Set(tps), paused: paused)) }),
            configuration: config, logger: quietLogger())
        d.partitionsAssigned([p0, p1])
        func big(_ tp: TopicPartition, _ key: String) -> KafkaRecord {
            KafkaRecord(topic: tp.topic, partition: tp.partition, offset: 0, key: Array(key.utf8), value: [UInt8](repeating: 1, count: 999))
        }
        await d.offer(big(p0, "a"))  // 1,000 bytes
        await d.offer(big(p1, "b"))  // 2,000
        #expect(pauses.all.isEmpty)
        var third = big(p0, "c")
        third.offset = 1
        await d.offer(third)  // 3,000 bytes in 3 records: over the byte bound
        #expect(pauses.all == [PauseCall(partitions: [p0, p1], paused: true)])
        await gates.open("in/0@0")
        await eventually("one record done") { d.inFlightCount == 2 }
        #expect(pauses.count == 1, "2,000 bytes left: over half the bound")
        await gates.open("in/1@0")
        await eventually("resumed at half") { pauses.count == 2 }
        #expect(pauses.all.last == PauseCall(partitions: [p0, p1], paused: false))
        await gates.open("in/0@1")
        await d.waitIdle()
    }
}

import Foundation
import Kafka
import Synchronization
import Testing

@testable import OrderCore

/// A crash guard without a database: the markers live in memory, every call is logged into the
/// effects' event log (so their order relative to sends and offsets can be checked).
final class FakeCrashGuard: Sendable {
    let recent: Bool
    let events: Log<String>
    /// How many unclean exits each record id was in progress at before.
    let previousAttempts: [String: Int]
    let marked = Log<String>()
    let cleared = Log<String>()

    init(recent: Bool, events: Log<String>, previousAttempts: [String: Int] = [:]) {
        self.recent = recent
        self.events = events
        self.previousAttempts = previousAttempts
    }

    var crashGuard: Dispatcher.CrashGuard {
        Dispatcher.CrashGuard(
            recentUncleanExit: { self.recent },
            markInProgress: { tp, offset in
                let id = "\(tp.topic)/\(tp.partition)@\(offset)"
                self.marked.append(id)
                self.events.append("mark \(id)")
                return self.previousAttempts[id] ?? 0
            },
            clearInProgress: { tp, offset in
                let id = "\(tp.topic)/\(tp.partition)@\(offset)"
                self.cleared.append(id)
                self.events.append("clear \(id)")
            })
    }
}

@Suite("Probation (crash-loop breaker)", .timeLimit(.minutes(1)))
struct ProbationTests {
    let p0 = TopicPartition("in", 0)
    let p1 = TopicPartition("in", 1)

    func make(
        _ handler: FakeHandler, _ effects: FakeEffects, _ guardian: FakeCrashGuard, probationRecords: Int = 2_000
    ) -> Dispatcher {
        var c = fastConfiguration()
        c.probationRecords = probationRecords
        let d = Dispatcher(handler: handler, effects: effects.effects, configuration: c, crashGuard: guardian.crashGuard, logger: quietLogger())
        d.partitionsAssigned([p0, p1])
        return d
    }

    /// Counts records of each partition running at once.
    final class Concurrency: Sendable {
        private let state = Mutex<(now: [TopicPartition: Int], max: [TopicPartition: Int])>(([:], [:]))
        func enter(_ tp: TopicPartition) { state.withLock { $0.now[tp, default: 0] += 1; $0.max[tp] = Swift.max($0.max[tp] ?? 0, $0.now[tp] ?? 0) } }
        func leave(_ tp: TopicPartition) { state.withLock { $0.now[tp, default: 1] -= 1 } }
        func highest(_ tp: TopicPartition) -> Int { state.withLock { $0.max[tp] ?? 0 } }
    }

    @Test func valueTypeRoutesTheFirstRecordsOfAllPartitionsThroughOneBudgetThenHoldsUntilTheLaneIsDone() {
        var p = Probation()
        #expect(p.isEmpty)
        p.enter([p0, p1], records: 3, duration: .seconds(60))
        let other = TopicPartition("other", 0)
        #expect(p.route(rec(p0, 0, key: "a")) == .probation)
        #expect(p.route(rec(other, 0, key: "a")) == .normal)
        #expect(p.route(rec(p1, 0, key: "b")) == .probation)
        #expect(p.route(rec(p0, 1, key: "b")) == .probation)
        #expect(p.route(rec(p0, 2, key: "a")) == .held)
        #expect(p.route(rec(p1, 1, key: "c")) == .held)
        #expect(p.completed(p0, offset: 0).isEmpty)
        #expect(p.completed(p1, offset: 0).isEmpty)
        #expect(p.completed(p0, offset: 1).map(rid) == ["in/0@2", "in/1@1"])
        #expect(p.isEmpty)
        #expect(p.route(rec(p0, 3, key: "a")) == .normal)
    }

    @Test func valueTypeEndsAQuietProbationAfterItsDurationAndDropsHeldRecordsOnRevoke() {
        var p = Probation()
        let start = ContinuousClock.now
        p.enter([p0], records: 100, duration: .seconds(10), now: start)
        #expect(p.route(rec(p0, 0, key: "a"), now: start) == .probation)
        // Past its duration with a record still in the lane: later records wait for it.
        #expect(p.route(rec(p0, 1, key: "a"), now: start + .seconds(11)) == .held)
        #expect(p.completed(p0, offset: 0).map(\.offset) == [1])
        #expect(p.route(rec(p0, 2, key: "a"), now: start + .seconds(12)) == .normal)

        p.enter([p0, p1], records: 2, duration: .seconds(60))
        #expect(p.route(rec(p1, 0, key: "a")) == .probation)
        #expect(p.route(rec(p0, 3, key: "a")) == .probation)
        #expect(p.route(rec(p1, 1, key: "a")) == .held)
        #expect(p.route(rec(p0, 4, key: "a")) == .held)
        // p1 goes: its held record is dropped; p0's record still in the lane keeps p0's held one back.
        let (dropped, released) = p.leave([p1])
        #expect(dropped.map(rid) == ["in/1@1"])
        #expect(released.isEmpty)
        #expect(p.completed(p1, offset: 0).isEmpty)  // the running one finishing later changes nothing
        #expect(p.completed(p0, offset: 3).map(rid) == ["in/0@4"])
        #expect(p.isEmpty)
    }

    @Test func probationRunsRecordsOneAtATimeInOffsetOrderBehindTheMarker() async {
        let running = Concurrency()
        let all = TopicPartition("any", 0)
        let handler = FakeHandler { r, _ in
            running.enter(all)
            try? await Task.sleep(for: .milliseconds(2))
            running.leave(all)
        }
        let effects = FakeEffects()
        let guardian = FakeCrashGuard(recent: true, events: effects.events)
        let d = make(handler, effects, guardian)
        // Different keys: without probation these would run concurrently.
        for o in Int64(0)..<12 { await d.submit(rec(p0, o, key: "user-\(o % 4)")) }
        await d.waitIdle()

        let ids = (Int64(0)..<12).map { "in/0@\($0)" }
        #expect(handler.handled.all == ids)
        #expect(running.highest(all) == 1)
        #expect(guardian.marked.all == ids)
        #expect(guardian.cleared.all == ids)
        // Each record: marked, then its answer sent, then the marker cleared, then its offset stored.
        let events = effects.events.all
        for (i, id) in ids.enumerated() {
            let mark = events.firstIndex(of: "mark \(id)") ?? -1
            let sent = events.firstIndex(of: "sent ok \(id)") ?? -1
            let clear = events.firstIndex(of: "clear \(id)") ?? -1
            let store = events.firstIndex(of: "store in[0]→\(i + 1)") ?? -1
            #expect(0 <= mark && mark < sent && sent < clear && clear < store, "\(id): \(events)")
        }

        // Records of several partitions share the one lane: a crash finds exactly one in progress.
        for o in Int64(0)..<8 { await d.submit(rec(o % 2 == 0 ? p1 : p0, 12 + o / 2, key: "user-\(o)")) }
        await d.waitIdle()
        #expect(running.highest(all) == 1)
        #expect(guardian.marked.count == 20)
    }

    @Test func aRecordInProgressAtEnoughUncleanExitsIsAnsweredAsPoisonedAndNotHandled() async {
        let handler = FakeHandler()
        let effects = FakeEffects()
        let guardian = FakeCrashGuard(recent: true, events: effects.events, previousAttempts: ["in/0@1": 2, "in/0@2": 1])
        let d = make(handler, effects, guardian)
        for o in Int64(0)..<4 { await d.submit(rec(p0, o, key: "k")) }
        await d.waitIdle()

        #expect(handler.started.all == ["in/0@0", "in/0@2", "in/0@3"])  // one previous crash is not enough
        #expect(handler.poisonedRecords.all == ["in/0@1"])
        #expect(effects.sent.all == ["ok in/0@0", "poisoned in/0@1", "ok in/0@2", "ok in/0@3"])
        #expect(guardian.cleared.all.contains("in/0@1"))
        #expect(effects.stored(p0).last == 4)
    }

    @Test func afterItsProbationRecordsAPartitionGoesBackToKeyLanesWithoutBreakingPerKeyOrder() async {
        let gates = Gates()
        let handler = FakeHandler { r, _ in if r.offset == 1 { await gates.wait(rid(r)) } }
        let effects = FakeEffects()
        let guardian = FakeCrashGuard(recent: true, events: effects.events)
        let d = make(handler, effects, guardian, probationRecords: 2)
        for o in Int64(0)..<8 { await d.submit(rec(p0, o, key: "k\(o % 2)")) }
        // Offset 1 (probation) is stuck: nothing later of the partition may start, whatever its key.
        await eventually("offset 1 started") { handler.started.all.contains("in/0@1") }
        try? await Task.sleep(for: .milliseconds(50))
        #expect(handler.started.all == ["in/0@0", "in/0@1"])
        await gates.open("in/0@1")
        await d.waitIdle()
        #expect(guardian.marked.all == ["in/0@0", "in/0@1"])  // only the probation records
        for key in 0..<2 {
            let order = handler.handled.all.filter { id in Int(id.split(separator: "@")[1]).map { $0 % 2 == key } ?? false }
            #expect(order == (0..<8).filter { $0 % 2 == key }.map { "in/0@\($0)" })
        }
        #expect(effects.stored(p0).last == 8)
    }

    @Test func withoutARecentUncleanExitNoMarkerIsTouched() async {
        let handler = FakeHandler()
        let effects = FakeEffects()
        let guardian = FakeCrashGuard(recent: false, events: effects.events)
        let d = make(handler, effects, guardian)
        for o in Int64(0)..<20 { await d.submit(rec(o % 2 == 0 ? p0 : p1, o / 2, key: "k\(o % 5)")) }
        await d.waitIdle()
        #expect(handler.handled.count == 20)
        #expect(guardian.marked.count == 0)
        #expect(guardian.cleared.count == 0)
    }

    @Test func revokingAPartitionOnProbationDropsItsHeldRecordsAndNeverStoresPastThem() async {
        let gates = Gates()
        let handler = FakeHandler { r, _ in if r.offset == 0 { await gates.wait(rid(r)) } }
        let effects = FakeEffects()
        let guardian = FakeCrashGuard(recent: true, events: effects.events)
        let d = make(handler, effects, guardian, probationRecords: 1)
        for o in Int64(0)..<4 { await d.submit(rec(p0, o, key: "k\(o)")) }
        await eventually("offset 0 started") { handler.started.count == 1 }
        let revoked = Task.detached { d.partitionsRevoking([self.p0], timeout: .seconds(20)) }
        // The revoke has begun (ownership is given up first) while offset 0 is still running.
        await eventually("ownership of p0 given up") { !d.isOwned(self.p0) }
        await gates.open("in/0@0")
        await revoked.value
        await d.waitIdle()
        #expect(handler.handled.all == ["in/0@0"])
        #expect(effects.stored(p0) == [1])
        #expect(await d.inFlightCount == 0)
    }
}

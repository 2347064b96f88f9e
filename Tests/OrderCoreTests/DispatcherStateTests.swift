import Kafka
import Testing

@testable import OrderCore

/// The dispatcher's decisions as a value, without tasks or locks: idle waiters are plain numbers.
@Suite("Dispatcher.State")
struct DispatcherStateTests {
    typealias State = Dispatcher.State<Int>
    let p0 = TopicPartition("in", 0)
    let p1 = TopicPartition("in", 1)

    func state(maxInFlight: Int = 100, owning: [TopicPartition]? = nil) -> Ref<State> {
        var c = Dispatcher.Configuration()
        c.maxInFlight = maxInFlight
        let s = Ref(State(configuration: c, laneKey: { r in r.key.map { String(decoding: $0, as: UTF8.self) } ?? "-" }))
        _ = s.v.assigned(owning ?? [p0, p1], probation: false)
        return s
    }

    func take(_ s: Ref<State>, _ lane: String) -> KafkaRecord? {
        var a = State.Actions()
        return s.v.nextRecord(lane, &a)
    }

    @Test func aNewLaneStartsOneTaskAndLaterRecordsQueueBehindIt() {
        let s = state()
        #expect(s.v.submit(rec(p0, 0, key: "a"), lane: "a").startLanes == ["a"])
        #expect(s.v.submit(rec(p0, 1, key: "a"), lane: "a").startLanes.isEmpty)
        #expect(s.v.submit(rec(p0, 2, key: "b"), lane: "b").startLanes == ["b"])
        #expect(take(s, "a")?.offset == 0)
        var a = State.Actions()
        let (store, next) = s.v.complete(rec(p0, 0, key: "a"), finished: true, lane: "a", &a)
        #expect(store == 1)
        #expect(next?.offset == 1)
        #expect(s.v.tracker.totalInFlight == 2)
    }

    @Test func theOffsetToStoreNeverPassesARunningRecord() {
        let s = state()
        _ = s.v.submit(rec(p0, 0, key: "slow"), lane: "slow")
        _ = s.v.submit(rec(p0, 1, key: "fast"), lane: "fast")
        #expect(take(s, "slow")?.offset == 0)
        #expect(take(s, "fast")?.offset == 1)
        var a = State.Actions()
        let fast = s.v.complete(rec(p0, 1, key: "fast"), finished: true, lane: "fast", &a)
        #expect(fast.store == nil)
        #expect(fast.next == nil)  // the lane is gone
        let slow = s.v.complete(rec(p0, 0, key: "slow"), finished: true, lane: "slow", &a)
        #expect(slow.store == 2)
        #expect(s.v.isIdle(nil))
    }

    @Test func aRecordOfAPartitionNotOwnedRunsButStoresNothing() {
        let s = state(owning: [p0])
        #expect(!s.v.isOwned(p1))
        _ = s.v.submit(rec(p1, 5, key: "a"), lane: "a")
        #expect(take(s, "a")?.offset == 5)
        var a = State.Actions()
        #expect(s.v.complete(rec(p1, 5, key: "a"), finished: true, lane: "a", &a).store == nil)
    }

    @Test func aRevokeDropsQueuedRecordsRefusesNewOnesAndIsWokenByTheLastRunningOne() {
        let s = state()
        _ = s.v.submit(rec(p0, 0, key: "a"), lane: "a")
        _ = s.v.submit(rec(p0, 1, key: "a"), lane: "a")
        _ = s.v.submit(rec(p1, 0, key: "a"), lane: "a")
        #expect(take(s, "a")?.offset == 0)
        _ = s.v.revoking([p0])
        #expect(!s.v.isOwned(p0))
        #expect(s.v.isOwned(p1))
        #expect(s.v.mayStoreOffset(p0))  // still stored while it drains
        #expect(s.v.tracker.totalInFlight == 2)  // p0@1 dropped
        #expect(!s.v.isIdle([p0]))
        var a = State.Actions()
        let (store, next) = s.v.complete(rec(p0, 0, key: "a"), finished: true, lane: "a", &a)
        #expect(a.wakeRevoke)
        #expect(store == 1)  // the next owner starts at the dropped record
        #expect(next?.topicPartition == p1)
        #expect(s.v.isIdle([p0]))
        _ = s.v.revoked([p0])
        #expect(!s.v.isOwned(p0))
        #expect(!s.v.mayStoreOffset(p0))
    }

    @Test func theInFlightLimitPausesOwnedPartitionsNewOnesOnArrivalAndResumesAtHalf() {
        let s = state(maxInFlight: 4)
        for o in Int64(0)..<3 { #expect(!s.v.submit(rec(p0, o, key: "a"), lane: "a").reconcilePauses) }
        #expect(s.v.submit(rec(p0, 3, key: "a"), lane: "a").reconcilePauses)
        var change = s.v.pauseChange()
        #expect(Set(change.pause) == [p0, p1])
        #expect(change.resume.isEmpty)
        let p2 = TopicPartition("in", 2)
        #expect(s.v.assigned([p2], probation: false).reconcilePauses)
        #expect(s.v.pauseChange().pause == [p2])
        var a = State.Actions()
        var running = take(s, "a")
        for o in Int64(0)..<2 {
            #expect(running?.offset == o)
            running = s.v.complete(rec(p0, o, key: "a"), finished: true, lane: "a", &a).next
        }
        #expect(a.reconcilePauses)  // two in flight: half
        change = s.v.pauseChange()
        #expect(change.pause.isEmpty)
        #expect(Set(change.resume) == [p0, p1, p2])
    }

    @Test func idleWaitersAreReturnedWhenTheirPartitionsStopRunning() {
        let s = state()
        let idleAlready = s.v.waitIdle(nil, 1)
        #expect(!idleAlready)
        _ = s.v.submit(rec(p0, 0, key: "a"), lane: "a")
        #expect(take(s, "a")?.offset == 0)
        let waits = [s.v.waitIdle([p0], 2), s.v.waitIdle(nil, 3), s.v.waitIdle([p1], 4)]
        #expect(waits == [true, true, false])
        var a = State.Actions()
        _ = s.v.complete(rec(p0, 0, key: "a"), finished: true, lane: "a", &a)
        #expect(Set(a.idle) == [2, 3])
    }

    @Test func drainTakesNothingNewAndDropsWhatHasNotStarted() {
        let s = state()
        _ = s.v.submit(rec(p0, 0, key: "a"), lane: "a")
        _ = s.v.submit(rec(p0, 1, key: "a"), lane: "a")
        #expect(take(s, "a")?.offset == 0)
        s.v.drain()
        #expect(s.v.submit(rec(p0, 2, key: "b"), lane: "b").startLanes.isEmpty)
        var a = State.Actions()
        let (store, next) = s.v.complete(rec(p0, 0, key: "a"), finished: true, lane: "a", &a)
        #expect(store == 1)  // never past the record that did not run
        #expect(next == nil)
        #expect(s.v.isIdle(nil))
        let retries = s.v.mayRetry(rec(p0, 0, key: "a"))
        #expect(!retries)
    }
}

/// A value shared by a test's steps.
final class Ref<Value> {
    var v: Value
    init(_ v: Value) { self.v = v }
}

import Kafka
import Testing

@testable import OrderCore

@Suite("Liveness (what the probes see)")
struct LivenessTests {
    let t0 = ContinuousClock.now
    let steady = GroupWatch.Snapshot(state: "up", joinState: "steady", assignmentSize: 4)

    func sample(poll: UInt64, stuckSince: ContinuousClock.Instant? = nil, inFlight: Int = 0, group: GroupWatch.Snapshot? = nil, seen: ContinuousClock.Instant? = nil)
        -> Liveness.Sample
    {
        Liveness.Sample(
            pollCount: poll, progress: Dispatcher.Progress(inFlight: inFlight, completed: 7, stuckSince: stuckSince), group: group,
            groupSeenAt: seen)
    }

    func at(_ s: Int) -> ContinuousClock.Instant { t0 + .seconds(s) }

    @Test func idleWithAPollingLoopAndASettledGroupIsAliveAndReady() {
        var l = Liveness(pollBound: .seconds(60), progressBound: .seconds(10), groupStatsMaxAge: .seconds(15), now: t0)
        // Far longer than the progress bound with nothing running: still alive.
        for s in stride(from: 0, through: 300, by: 5) {
            let status = l.assess(sample(poll: UInt64(s), group: steady, seen: at(s)), now: at(s))
            #expect(status == Liveness.Status(alive: true, ready: true, reason: nil), "at \(s) s")
        }
    }

    @Test func aStalledPollLoopIsNotAliveAfterItsBound() {
        var l = Liveness(pollBound: .seconds(60), progressBound: .seconds(10), groupStatsMaxAge: nil, now: t0)
        #expect(l.assess(sample(poll: 5), now: at(1)).alive)
        #expect(l.assess(sample(poll: 5), now: at(60)).alive)
        let stalled = l.assess(sample(poll: 5), now: at(62))
        #expect(!stalled.alive && !stalled.ready)
        #expect(stalled.reason?.contains("poll loop") == true)
        // It runs again: alive at once.
        #expect(l.assess(sample(poll: 6), now: at(63)).alive)
    }

    @Test func aRecordStuckLongerThanTheBoundIsNotAlive() {
        var l = Liveness(pollBound: .seconds(60), progressBound: .seconds(10), groupStatsMaxAge: nil, now: t0)
        #expect(l.assess(sample(poll: 1, stuckSince: at(0), inFlight: 3), now: at(10)).alive)
        let stuck = l.assess(sample(poll: 2, stuckSince: at(0), inFlight: 3), now: at(11))
        #expect(!stuck.alive && !stuck.ready)
        #expect(stuck.reason?.contains("3 in flight") == true, "\(stuck.reason ?? "")")
        // The record finished (or began a retry: the dispatcher moves `stuckSince`): alive again.
        #expect(l.assess(sample(poll: 3, stuckSince: at(11), inFlight: 2), now: at(12)).alive)
        #expect(l.assess(sample(poll: 4), now: at(13)).alive)
    }

    @Test func readinessNeedsRecentStatisticsOfASettledGroup() {
        var l = Liveness(pollBound: .seconds(60), progressBound: .seconds(10), groupStatsMaxAge: .seconds(15), now: t0)
        let noStats = l.assess(sample(poll: 1), now: at(1))
        #expect(noStats.alive && !noStats.ready)
        let joining = GroupWatch.Snapshot(state: "up", joinState: "wait-join", assignmentSize: 0)
        let rebalancing = l.assess(sample(poll: 2, group: joining, seen: at(2)), now: at(2))
        #expect(rebalancing.alive && !rebalancing.ready)
        #expect(rebalancing.reason?.contains("wait-join") == true)
        #expect(l.assess(sample(poll: 3, group: steady, seen: at(3)), now: at(3)).ready)
        // A standby member (settled, no partitions) is ready.
        let standby = GroupWatch.Snapshot(state: "up", joinState: "steady", assignmentSize: 0)
        #expect(l.assess(sample(poll: 4, group: standby, seen: at(4)), now: at(4)).ready)
        // Statistics stopped coming.
        #expect(!l.assess(sample(poll: 5, group: steady, seen: at(4)), now: at(20)).ready)
        // Not alive: not ready either, whatever the group says.
        #expect(!l.assess(sample(poll: 6, stuckSince: at(0), inFlight: 1, group: steady, seen: at(30)), now: at(30)).ready)
    }

    @Test func withoutStatisticsReadyFollowsAlive() {
        var l = Liveness(pollBound: .seconds(60), progressBound: .seconds(10), groupStatsMaxAge: nil, now: t0)
        #expect(l.assess(sample(poll: 1), now: at(1)) == Liveness.Status(alive: true, ready: true, reason: nil))
    }
}

import Foundation
import Logging
import Testing

@testable import OrderCore

@Suite("Group watch (librdkafka statistics)", .timeLimit(.minutes(1)))
struct GroupWatchTests {
    func stats(_ join: String, size: Int = 4) -> String {
        #"{"name":"c","type":"consumer","cgrp":{"state":"up","stateage":1,"join_state":"\#(join)","rebalance_age":1,"rebalance_cnt":2,"assignment_size":\#(size)},"topics":{}}"#
    }

    @Test func readsTheGroupState() {
        #expect(GroupWatch.snapshot(statistics: stats("wait-unassign-to-complete", size: 0))
            == GroupWatch.Snapshot(state: "up", joinState: "wait-unassign-to-complete", assignmentSize: 0))
        #expect(GroupWatch.snapshot(statistics: #"{"name":"p","type":"producer"}"#) == nil)
    }

    @Test func warnsOnlyAfterTheBoundAndOncePerEpisode() {
        let t0 = ContinuousClock.now
        let watch = GroupWatch(bound: .seconds(120), logger: Logger(label: "test"), now: t0)
        #expect(!watch.update(statistics: stats("steady"), now: t0 + .seconds(1)))
        #expect(!watch.update(statistics: stats("wait-unassign-to-complete", size: 0), now: t0 + .seconds(60)))
        #expect(watch.update(statistics: stats("wait-unassign-to-complete", size: 0), now: t0 + .seconds(122)))
        #expect(!watch.update(statistics: stats("wait-unassign-to-complete", size: 0), now: t0 + .seconds(200)))
        #expect(watch.update(statistics: stats("wait-unassign-to-complete", size: 0), now: t0 + .seconds(430)))
        #expect(!watch.update(statistics: stats("steady"), now: t0 + .seconds(431)))
        #expect(!watch.update(statistics: stats("wait-join"), now: t0 + .seconds(500)))
        #expect(watch.last?.joinState == "wait-join")
    }
}

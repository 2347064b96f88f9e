import Kafka
import Testing
import TestSupport

@testable import OrderCore

@Suite("OffsetTracker", .timeLimit(.minutes(1)))
struct OffsetTrackerTests {
    let p0 = TopicPartition("t", 0)
    let p1 = TopicPartition("t", 1)
    let q0 = TopicPartition("u", 0)

    @Test func bytesInFlightFollowTheRecordsBegunFinishedDiscardedAndForgotten() {
        var t = OffsetTracker()
        t.begin(p0, 0, bytes: 100)
        t.begin(p0, 1, bytes: 200)
        t.begin(p0, 1, bytes: 200)  // a redelivery of a record in flight counts once
        t.begin(p1, 0, bytes: 50)
        #expect(t.totalBytesInFlight == 350)
        #expect(t.finish(p0, 1) == nil)
        #expect(t.totalBytesInFlight == 150)
        t.discard(p0, 0)
        #expect(t.totalBytesInFlight == 50)
        t.begin(p1, 1, bytes: 25)
        t.forget(p1)
        #expect(t.totalBytesInFlight == 0)
        #expect(t.totalInFlight == 0)
    }

    @Test func inOrderFinishesAdvanceOneByOne() {
        var t = OffsetTracker()
        for o in Int64(0)..<3 { t.begin(p0, o) }
        #expect(t.inFlight(p0) == 3)
        #expect(t.finish(p0, 0) == 1)
        #expect(t.finish(p0, 1) == 2)
        #expect(t.finish(p0, 2) == 3)
        #expect(t.inFlight(p0) == 0)
        #expect(t.totalInFlight == 0)
    }

    @Test func laterFinishesWaitForTheLowestUnfinishedOffset() {
        var t = OffsetTracker()
        for o in Int64(10)...14 { t.begin(p0, o) }
        #expect(t.finish(p0, 13) == nil)
        #expect(t.finish(p0, 11) == nil)
        #expect(t.finish(p0, 14) == nil)
        #expect(t.finish(p0, 10) == 12)  // 11 done, 12 still running
        #expect(t.finish(p0, 12) == 15)  // everything begun is done
        #expect(t.inFlight(p0) == 0)
    }

    @Test func reverseOrderFinishesCommitOnlyAtTheEnd() {
        var t = OffsetTracker()
        for o in Int64(0)..<100 { t.begin(p0, o) }
        for o in stride(from: Int64(99), to: 0, by: -1) {
            #expect(t.finish(p0, o) == nil)
        }
        #expect(t.finish(p0, 0) == 100)
    }

    @Test func committedOffsetNeverPassesAnUnfinishedOffsetUnderRandomOrder() {
        var rng = SeededRandom(seed: 7)
        for _ in 0..<50 {
            var t = OffsetTracker()
            let offsets = Array(Int64(0)..<40).map { $0 * 2 + 5 }  // gaps, as after compaction
            offsets.forEach { t.begin(p0, $0) }
            var unfinished = Set(offsets)
            var lastCommit: Int64 = -1
            for o in offsets.shuffled(using: &rng) {
                unfinished.remove(o)
                if let next = t.finish(p0, o) {
                    #expect(next > lastCommit)
                    lastCommit = next
                    if let lowest = unfinished.min() {
                        #expect(next == lowest)
                    } else {
                        #expect(next == offsets.last! + 1)
                    }
                } else {
                    #expect(unfinished.contains { $0 < o })
                }
            }
            #expect(lastCommit == offsets.last! + 1)
        }
    }

    @Test func partitionsAreIndependent() {
        var t = OffsetTracker()
        t.begin(p0, 0); t.begin(p0, 1)
        t.begin(p1, 0); t.begin(p1, 1)
        t.begin(q0, 7)
        #expect(t.totalInFlight == 5)
        #expect(t.finish(p1, 0) == 1)
        #expect(t.finish(p0, 1) == nil)
        #expect(t.finish(q0, 7) == 8)
        #expect(t.finish(p1, 1) == 2)
        #expect(t.inFlight(p0) == 1)
        #expect(t.inFlight(p1) == 0)
        #expect(t.totalInFlight == 1)
        #expect(t.finish(p0, 0) == 2)
    }

    @Test func unknownOrRepeatedFinishesChangeNothing() {
        var t = OffsetTracker()
        #expect(t.finish(p0, 0) == nil)
        t.begin(p0, 5)
        #expect(t.finish(p0, 4) == nil)
        #expect(t.finish(p1, 5) == nil)
        #expect(t.finish(p0, 5) == 6)
        #expect(t.finish(p0, 5) == nil)
        #expect(t.totalInFlight == 0)
    }

    @Test func redeliveredOffsetsAreKeptSortedAndNotDuplicated() {
        var t = OffsetTracker()
        t.begin(p0, 5); t.begin(p0, 6)
        // A seek back redelivers 3..6.
        t.begin(p0, 3); t.begin(p0, 4); t.begin(p0, 5); t.begin(p0, 6)
        #expect(t.inFlight(p0) == 4)
        #expect(t.finish(p0, 5) == nil)
        #expect(t.finish(p0, 3) == 4)
        #expect(t.finish(p0, 4) == 6)
        #expect(t.finish(p0, 6) == 7)
    }

    @Test func forgetDropsAPartition() {
        var t = OffsetTracker()
        t.begin(p0, 0); t.begin(p0, 1); t.begin(p1, 0)
        t.forget(p0)
        #expect(t.inFlight(p0) == 0)
        #expect(t.totalInFlight == 1)
        #expect(t.finish(p0, 0) == nil)
        // Starting over after forget: a fresh partition state, no stale offsets block commits.
        t.begin(p0, 100)
        #expect(t.finish(p0, 100) == 101)
        #expect(t.finish(p1, 0) == 1)
    }
}


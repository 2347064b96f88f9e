import Testing

@testable import Kafka

/// The consumer's decisions without librdkafka: readers are plain numbers.
@Suite("KafkaConsumer.StateMachine")
struct ConsumerStateMachineTests {
    typealias Machine = KafkaConsumer.StateMachine<Int>
    let p0 = TopicPartition("t", 0)
    let p1 = TopicPartition("t", 1)

    func machine(maxBuffered: Int = 4, assigned: Set<TopicPartition>? = nil) -> Ref<Machine> {
        let m = Ref(Machine(maxBuffered: maxBuffered))
        #expect(m.v.startPolling() == true)
        m.v.replaceAssignment(assigned ?? [p0, p1])
        return m
    }

    /// Asks for a record as reader `reader`; returns the offset delivered, or nil when it waits.
    func ask(_ m: Ref<Machine>, _ reader: Int) -> Int64? {
        switch m.v.next(m.v.makeWaiterID(), reader, cancelled: false) {
        case .deliver(let r, _): return r.offset
        case .wait: return nil
        case .finished: return -1
        }
    }

    // MARK: Lifecycle

    @Test func pollingStartsOnceAndNotAfterClose() {
        let m = Ref(Machine(maxBuffered: 4))
        #expect(m.v.lifecycle == .idle)
        #expect(m.v.startPolling() == true)
        #expect(m.v.startPolling() == false)
        #expect(m.v.lifecycle == .polling)
        let closed = Ref(Machine(maxBuffered: 4))
        _ = closed.v.beginClose()
        #expect(closed.v.startPolling() == false)
        #expect(closed.v.isClosing)
    }

    @Test func closeEndsEveryWaitingReaderAndDropsBufferedRecords() {
        let m = machine()
        #expect(ask(m, 1) == nil)
        #expect(ask(m, 2) == nil)
        #expect(m.v.waiterCount == 2)
        let ended = m.v.beginClose()
        #expect(ended == [1, 2])
        #expect(m.v.lifecycle == .closing)
        guard case .dropped = m.v.push(record(p0, 0)) else { Issue.record("a record after close was kept"); return }
        #expect(ask(m, 3) == -1)
        #expect(m.v.pollLoopExited().isEmpty)
        #expect(m.v.lifecycle == .closed)
        _ = m.v.beginClose()
        #expect(m.v.lifecycle == .closed)  // closing again does not go back
    }

    @Test func theEndOfThePollLoopEndsTheRecords() {
        let m = machine()
        _ = m.v.push(record(p0, 0))
        #expect(ask(m, 1) == 0)
        #expect(ask(m, 2) == nil)
        #expect(m.v.pollLoopExited() == [2])
        #expect(ask(m, 3) == -1)
    }

    // MARK: Waiting readers

    @Test func aWaitingReaderGetsTheNextRecordDirectlyInOrderOfAsking() {
        let m = machine()
        #expect(ask(m, 1) == nil)
        #expect(ask(m, 2) == nil)
        guard case .deliver(1) = m.v.push(record(p0, 0)) else { Issue.record("reader 1 first"); return }
        guard case .deliver(2) = m.v.push(record(p1, 0)) else { Issue.record("then reader 2"); return }
        guard case .buffered(pauseFetching: false) = m.v.push(record(p0, 1)) else { Issue.record("no reader left"); return }
        #expect(ask(m, 3) == 1)
    }

    @Test func aCancelledReaderIsEndedAndNoLongerServed() {
        let m = machine()
        let id = m.v.makeWaiterID()
        guard case .wait = m.v.next(id, 7, cancelled: false) else { Issue.record("should wait"); return }
        #expect(m.v.cancel(id) == 7)
        #expect(m.v.cancel(id) == nil)
        guard case .buffered = m.v.push(record(p0, 0)) else { Issue.record("no reader is waiting"); return }
        // What is buffered still goes to a reader whose task is cancelled (the stream ends after it).
        guard case .deliver(let r, _) = m.v.next(m.v.makeWaiterID(), 8, cancelled: true) else { Issue.record("buffered record"); return }
        #expect(r.offset == 0)
    }

    @Test func aCancelledReaderWithNothingBufferedFinishes() {
        let m = machine()
        guard case .finished = m.v.next(m.v.makeWaiterID(), 1, cancelled: true) else { Issue.record("should finish"); return }
        #expect(m.v.waiterCount == 0)
    }

    // MARK: Assignment

    @Test func recordsOfPartitionsNotAssignedAreDropped() {
        let m = machine(assigned: [p0])
        guard case .dropped = m.v.push(record(p1, 0)) else { Issue.record("p1 is not assigned"); return }
        #expect(m.v.buffers.isEmpty)
    }

    @Test func aNewManualAssignmentDropsTheOthersBuffersAndPauses() {
        let m = machine()
        _ = m.v.push(record(p0, 0))
        _ = m.v.push(record(p1, 0))
        _ = m.v.setPaused([p0, p1], true)
        m.v.replaceAssignment([p1])
        #expect(m.v.buffers.count(p0) == 0)
        #expect(m.v.buffers.count(p1) == 1)
        #expect(m.v.pausedPartitions(.application) == [p1])
        #expect(m.v.reconcile() == .init(pause: [p1]))
    }

    /// librdkafka is told only the difference (a kept partition is neither stopped nor restarted,
    /// see `KafkaConsumer.assign`), and a kept partition keeps its buffer and the record in hand.
    @Test func aNewManualAssignmentNamesOnlyTheDifferenceAndKeepsTheKeptPartitions() {
        let m = machine(assigned: [p0])
        _ = m.v.push(record(p0, 7))
        #expect(ask(m, 1) == 7)
        let p2 = TopicPartition("t", 2)
        #expect(m.v.replaceAssignment([p0, p1]) == .init(removed: [], added: [p1]))
        #expect(m.v.undrained([p0]) == [p0])  // still being handled: a revoke would wait for it
        _ = m.v.push(record(p0, 8))
        #expect(m.v.replaceAssignment([p1, p2]) == .init(removed: [p0], added: [p2]))
        #expect(m.v.buffers.count(p0) == 0)
        #expect(m.v.undrained([p0]).isEmpty)
        #expect(m.v.replaceAssignment([p1, p2]) == .init())
    }

    @Test func eagerAssignmentsReplaceAndCooperativeOnesAdd() {
        let m = Ref(Machine(maxBuffered: 4))
        m.v.assigned([p0], incremental: false)
        m.v.assigned([p1], incremental: true)
        #expect(m.v.assignment == [p0, p1])
        m.v.assigned([p1], incremental: false)
        #expect(m.v.assignment == [p1])
    }

    @Test func revokeDropsBufferedRecordsAndPausesButOwnershipEndsOnlyAtForget() {
        let m = machine(maxBuffered: 2)
        _ = m.v.push(record(p0, 0))
        _ = m.v.push(record(p0, 1))  // full
        _ = m.v.push(record(p1, 0))
        _ = m.v.setPaused([p1], true)
        #expect(m.v.reconcile() == .init(pause: [p0, p1]))
        m.v.revoking([p0, p1])
        #expect(m.v.buffers.isEmpty)
        #expect(m.v.pausedPartitions(.bufferFull).isEmpty && m.v.pausedPartitions(.application).isEmpty)
        #expect(m.v.assignment == [p0, p1])  // still ours until unassigned
        #expect(m.v.reconcile() == .init(resume: [p0, p1]))
        m.v.forget([p0])
        #expect(m.v.assignment == [p1])
        guard case .dropped = m.v.push(record(p0, 2)) else { Issue.record("p0 was given up"); return }
    }

    /// Lost partitions go the same way as revoked ones in the machine (the caller skips the drain
    /// and the commit): nothing of them is kept.
    @Test func lostPartitionsAreForgottenWithTheirBuffers() {
        let m = machine()
        _ = m.v.push(record(p0, 0))
        m.v.revoking([p0])
        m.v.forget([p0])
        #expect(m.v.assignment == [p1])
        #expect(m.v.buffers.isEmpty)
        #expect(m.v.undrained([p0]).isEmpty)
    }

    // MARK: Revoke drain

    @Test func theRecordBeingHandledIsUndrainedUntilStoredOrTheReaderAsksAgain() {
        let m = machine()
        _ = m.v.push(record(p0, 5))
        _ = m.v.push(record(p1, 9))
        #expect(ask(m, 1) == 5)
        #expect(m.v.undrained([p0, p1]) == [p0])
        m.v.stored(p0, nextOffset: 5)  // an older offset does not count
        #expect(m.v.undrained([p0]) == [p0])
        m.v.stored(p0, nextOffset: 6)
        #expect(m.v.undrained([p0]).isEmpty)
        #expect(ask(m, 1) == 9)
        #expect(m.v.undrained([p1]) == [p1])
        #expect(ask(m, 1) == nil)  // asking for more: done with record 9
        #expect(m.v.undrained([p1]).isEmpty)
        // A record handed straight to a waiting reader counts as well.
        guard case .deliver = m.v.push(record(p1, 10)) else { Issue.record("reader 1 waits"); return }
        #expect(m.v.undrained([p1]) == [p1])
        m.v.assigned([p1], incremental: true)  // a fresh assignment starts afresh
        #expect(m.v.undrained([p1]).isEmpty)
    }

    // MARK: Pauses

    @Test func aFullBufferPausesFetchingOnceAndResumesAtHalf() {
        let m = machine(maxBuffered: 4)
        for o in Int64(0)..<3 {
            guard case .buffered(pauseFetching: false) = m.v.push(record(p0, o)) else { Issue.record("not full yet"); return }
        }
        guard case .buffered(pauseFetching: true) = m.v.push(record(p0, 3)) else { Issue.record("full at 4"); return }
        // librdkafka may still hand over what it had fetched: kept, no second pause.
        guard case .buffered(pauseFetching: false) = m.v.push(record(p0, 4)) else { Issue.record("already paused"); return }
        #expect(m.v.pausedPartitions(.bufferFull) == [p0])
        #expect(m.v.reconcile() == .init(pause: [p0]))
        #expect(m.v.reconcile().isEmpty)
        #expect(ask(m, 1) == 0)  // 4 left
        #expect(ask(m, 1) == 1)  // 3 left
        #expect(m.v.takeReconcileRequest() == false)
        guard case .deliver(_, wakePoller: true) = m.v.next(m.v.makeWaiterID(), 1, cancelled: false) else {
            Issue.record("at half the poll thread is woken"); return
        }
        #expect(m.v.takeReconcileRequest() == true)
        #expect(m.v.takeReconcileRequest() == false)
        #expect(m.v.reconcile() == .init(resume: [p0]))
    }

    @Test func anApplicationPauseHoldsBackBufferedRecordsUntilResume() {
        let m = machine()
        _ = m.v.push(record(p0, 0))
        _ = m.v.push(record(p0, 1))
        _ = m.v.push(record(p1, 0))
        #expect(m.v.setPaused([p0], true).isEmpty)
        #expect(m.v.reconcile() == .init(pause: [p0]))
        #expect(ask(m, 1) == 0 /* p1's */)
        #expect(ask(m, 2) == nil)
        #expect(ask(m, 3) == nil)
        // Nothing of p0 reaches a waiting reader while it is paused, not even a fresh record.
        guard case .buffered = m.v.push(record(p0, 2)) else { Issue.record("p0 is paused"); return }
        let ready = m.v.setPaused([p0], false)
        #expect(ready.map(\.0) == [2, 3])
        #expect(ready.map(\.1.offset) == [0, 1])
        #expect(m.v.reconcile() == .init(resume: [p0]))
        #expect(ask(m, 4) == 2)
    }

    @Test func bothPauseReasonsMustEndBeforeFetchingResumes() {
        let m = machine(maxBuffered: 2)
        _ = m.v.push(record(p0, 0))
        _ = m.v.push(record(p0, 1))  // full
        _ = m.v.setPaused([p0], true)
        #expect(m.v.reconcile() == .init(pause: [p0]))
        _ = m.v.setPaused([p0], false)  // records go nowhere: nobody waits
        #expect(m.v.reconcile().isEmpty)  // still full
        #expect(ask(m, 1) == 0)  // 1 left: half
        #expect(m.v.reconcile() == .init(resume: [p0]))
    }

    @Test func pausesOfPartitionsNotAssignedAreNotApplied() {
        let m = machine(assigned: [p0])
        _ = m.v.setPaused([p0, p1], true)
        #expect(m.v.reconcile() == .init(pause: [p0]))
        m.v.assigned([p1], incremental: true)
        #expect(m.v.reconcile() == .init(pause: [p1]))  // the application's pause of p1 now applies
        #expect(m.v.appliedPauses == [p0, p1])
    }
}

/// A reference to a value, so that `#expect` can call its mutating functions.
final class Ref<Value> {
    var v: Value
    init(_ v: Value) { self.v = v }
}

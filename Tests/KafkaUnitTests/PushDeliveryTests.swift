import Foundation
import Logging
import Synchronization
import Testing

@testable import Kafka

/// Push delivery (`Options.deliver`) without a broker: the state machine's decisions, and the
/// core handing records to the sink on the calling (poll) thread, holding back paused partitions
/// and flushing them in order, and revoking without the hand-off wait.
@Suite("KafkaConsumer push delivery", .timeLimit(.minutes(1)))
struct PushDeliveryTests {
    typealias Machine = KafkaConsumer.StateMachine<Int>
    let p0 = TopicPartition("t", 0)
    let p1 = TopicPartition("t", 1)

    func pushing(maxBuffered: Int = 2, assigned: Set<TopicPartition>? = nil) -> Ref<Machine> {
        let m = Ref(Machine(maxBuffered: maxBuffered, pushes: true))
        #expect(m.v.startPolling() == true)
        m.v.replaceAssignment(assigned ?? [p0, p1])
        return m
    }

    func isSink(_ action: Machine.PushAction) -> Bool {
        if case .sink = action { return true }
        return false
    }

    func isDropped(_ action: Machine.PushAction) -> Bool {
        if case .dropped = action { return true }
        return false
    }

    // MARK: State machine

    @Test func assignedRecordsGoToTheSinkAndNothingIsBufferedOrPausedForBufferSpace() {
        let m = pushing(maxBuffered: 2)
        for o in Int64(0)..<10 { #expect(isSink(m.v.push(record(p0, o)))) }
        #expect(m.v.buffers.isEmpty)
        #expect(m.v.pausedPartitions(.bufferFull).isEmpty)
        #expect(m.v.reconcile().isEmpty)
    }

    @Test func recordsOfPartitionsNotAssignedOrAfterCloseAreDropped() {
        let m = pushing(assigned: [p0])
        #expect(isDropped(m.v.push(record(p1, 0))))
        m.v.assigned([p1], incremental: true)
        #expect(isSink(m.v.push(record(p1, 1))))
        m.v.forget([p1])
        #expect(isDropped(m.v.push(record(p1, 2))))
        _ = m.v.beginClose()
        #expect(isDropped(m.v.push(record(p0, 0))))
    }

    @Test func aPauseOfAssignedPartitionsOnlyDoesNotHoldBackOneAssignedLater() {
        let m = pushing(assigned: [p0])
        _ = m.v.setPaused([p0, p1], true, onlyAssigned: true)  // e.g. meant for the consumer this one replaces
        #expect(m.v.pausedPartitions(.application) == [p0])
        m.v.assigned([p1], incremental: true)
        #expect(isSink(m.v.push(record(p1, 0))), "p1 was never paused here")
        #expect(isBuffered(m.v.push(record(p0, 0)), pausing: false), "p0 is")
    }

    @Test func aPauseThatCameDuringTheRevokeIsForgottenWithThePartition() {
        let m = pushing(assigned: [p0, p1])
        m.v.revoking([p0])
        _ = m.v.setPaused([p0, p1], true, onlyAssigned: true)  // p0 is still assigned until `forget`
        m.v.forget([p0])
        m.v.assigned([p0], incremental: true)
        #expect(isSink(m.v.push(record(p0, 0))), "a partition assigned again starts unpaused")
        #expect(!isSink(m.v.push(record(p1, 0))), "p1's pause stays")
    }

    func tookFlush(_ m: Ref<Machine>) -> Bool { m.v.takeFlushRequest() }
    func tookReconcile(_ m: Ref<Machine>) -> Bool { m.v.takeReconcileRequest() }
    func popped(_ m: Ref<Machine>) -> Int64? { m.v.popForSink()?.offset }

    func isBuffered(_ action: Machine.PushAction, pausing: Bool) -> Bool {
        if case .buffered(let p) = action { return p == pausing }
        return false
    }

    @Test func recordsOfAPausedPartitionWaitInItsBufferWhileFetchingGoesOn() {
        let m = pushing(maxBuffered: 4)
        #expect(m.v.setPaused([p0], true).isEmpty)
        // An application pause alone does not stop librdkafka: what it prefetched would be dropped
        // and fetched again after the resume.
        #expect(m.v.reconcile().isEmpty)
        #expect(isBuffered(m.v.push(record(p0, 0)), pausing: false))
        #expect(isSink(m.v.push(record(p1, 0))))  // other partitions flow on
        #expect(m.v.buffers.count(p0) == 1)
        #expect(popped(m) == nil)  // held back while paused
        #expect(!m.v.isFlushRequested)
    }

    @Test func aFullBufferOfAPausedPartitionStopsFetchingUntilTheFlushHalvesIt() {
        let m = pushing(maxBuffered: 4)
        _ = m.v.setPaused([p0], true)
        for o in Int64(0)..<3 { #expect(isBuffered(m.v.push(record(p0, o)), pausing: false)) }
        #expect(isBuffered(m.v.push(record(p0, 3)), pausing: true))
        #expect(m.v.reconcile().pause == [p0])
        _ = m.v.setPaused([p0], false)
        #expect(tookFlush(m))
        #expect(popped(m) == 0)
        #expect(popped(m) == 1)
        #expect(tookReconcile(m))  // half left: fetching resumes
        #expect(m.v.reconcile().resume == [p0])
        #expect(popped(m) == 2)
        #expect(popped(m) == 3)
        #expect(popped(m) == nil)
    }

    @Test func largeRecordsStopFetchingAtTheByteBoundLongBeforeTheCountBound() {
        let m = Ref(Machine(maxBuffered: 2_000, maxBufferedBytes: 1_000, pushes: true))
        _ = m.v.startPolling()
        m.v.replaceAssignment([p0, p1])
        func big(_ o: Int64) -> KafkaRecord {
            KafkaRecord(topic: p0.topic, partition: p0.partition, offset: o, key: [1, 2], value: [UInt8](repeating: 7, count: 298),
                headers: [KafkaHeader(key: "h", value: [9])])  // 312 bytes (a header counts its length prefixes too)
        }
        _ = m.v.setPaused([p0], true)
        for o in Int64(0)..<3 { #expect(isBuffered(m.v.push(big(o)), pausing: false)) }
        #expect(m.v.buffers.bytes(p0) == 936)
        #expect(isBuffered(m.v.push(big(3)), pausing: true), "1,248 bytes held: over the bound with 4 records")
        #expect(m.v.reconcile().pause == [p0])
        _ = m.v.setPaused([p0], false)
        #expect(tookFlush(m))
        #expect(popped(m) == 0)
        #expect(!tookReconcile(m), "936 bytes left: over half the bound (500)")
        #expect(popped(m) == 1)
        #expect(!tookReconcile(m), "624 bytes left: still over half")
        #expect(popped(m) == 2)
        #expect(tookReconcile(m), "312 bytes left: fetching resumes")
        #expect(m.v.reconcile().resume == [p0])
        #expect(popped(m) == 3)
        #expect(m.v.buffers.bytes(p0) == 0)
    }

    @Test func recordsFetchedBehindHeldBackOnesWaitForThemSoTheOrderHolds() {
        let m = pushing(maxBuffered: 10)
        _ = m.v.setPaused([p0], true)
        _ = m.v.push(record(p0, 0))
        _ = m.v.setPaused([p0], false)
        #expect(m.v.isFlushRequested)
        // Fetched after the resume but before the poll thread flushed: behind offset 0.
        #expect(isBuffered(m.v.push(record(p0, 1)), pausing: false))
        #expect(tookFlush(m))
        #expect(popped(m) == 0)
        #expect(popped(m) == 1)
        #expect(popped(m) == nil)
        #expect(isSink(m.v.push(record(p0, 2))))  // the buffer is empty again: straight through
    }

    @Test func aPauseDuringTheFlushHoldsTheRestBackUntilTheNextResume() {
        let m = pushing(maxBuffered: 10)
        _ = m.v.setPaused([p0], true)
        for o in Int64(0)..<3 { _ = m.v.push(record(p0, o)) }
        _ = m.v.setPaused([p0], false)
        #expect(tookFlush(m))
        #expect(popped(m) == 0)
        _ = m.v.setPaused([p0], true)  // the sink's in-flight limit
        #expect(popped(m) == nil)
        #expect(!tookFlush(m))
        _ = m.v.setPaused([p0], false)
        #expect(tookFlush(m))
        #expect(popped(m) == 1)
        #expect(popped(m) == 2)
    }

    @Test func aRevokeDropsHeldBackRecordsForTheNextOwner() {
        let m = pushing(maxBuffered: 10)
        _ = m.v.setPaused([p0], true)
        _ = m.v.push(record(p0, 0))
        m.v.revoking([p0])
        m.v.forget([p0])
        #expect(m.v.buffers.isEmpty)
        _ = m.v.setPaused([p0], false)
        #expect(popped(m) == nil)
    }

    @Test func aRevokeNeedsNoHandOffWait() {
        let m = pushing()
        _ = m.v.push(record(p0, 0))
        #expect(!m.v.needsHandOffDrain)
        #expect(m.v.undrained([p0]).isEmpty)
        // Readers of `records` keep their wait.
        let reading = Ref(Machine(maxBuffered: 2))
        _ = reading.v.startPolling()
        reading.v.replaceAssignment([p0])
        #expect(reading.v.needsHandOffDrain)
    }

    @Test func recordsOnlyEndsForAReaderOfAPushingConsumer() {
        let m = pushing()
        _ = m.v.push(record(p0, 0))
        guard case .wait = m.v.next(m.v.makeWaiterID(), 1, cancelled: false) else {
            Issue.record("a pushed record was also offered to `records`")
            return
        }
        #expect(m.v.beginClose() == [1])
    }

    // MARK: Core

    /// Never dereferenced: no pause is reconciled on these paths.
    static var noHandle: OpaquePointer? { OpaquePointer(bitPattern: 0x1) }

    func core(deliver: @escaping @Sendable (KafkaRecord) -> Void, onRevoking: @escaping @Sendable ([TopicPartition]) -> Void = { _ in })
        -> KafkaConsumer.Core
    {
        var logger = Logger(label: "push-delivery-test")
        logger.logLevel = .critical
        return KafkaConsumer.Core(
            mode: .group(id: "g"), rebalance: KafkaConsumer.Rebalance(onRevoking: onRevoking),
            options: KafkaConsumer.Options(revokeDrainTimeout: .seconds(30), deliver: deliver), logger: logger)
    }

    @Test func theCoreHandsRecordsToTheSinkOnTheCallingThreadInOrder() throws {
        let rk = try #require(Self.noHandle)
        let seen = Mutex<[(Int64, Bool)]>([])
        let pushingThread = pthread_self()
        let c = core { r in seen.withLock { $0.append((r.offset, pthread_equal(pthread_self(), pushingThread) != 0)) } }
        c.assigned([p0], incremental: false, rk: rk)
        for o in Int64(0)..<5 { c.push(record(p0, o), rk: rk) }
        c.push(record(p1, 0), rk: rk)  // not assigned
        let got = seen.withLock { $0 }
        let offsets = got.map { $0.0 }
        #expect(offsets == [0, 1, 2, 3, 4])
        #expect(got.allSatisfy { $0.1 })
    }

    @Test func theCoreHoldsBackAPausedPartitionAndFlushesItInOrderAfterTheResume() throws {
        let rk = try #require(Self.noHandle)
        let seen = Mutex<[Int64]>([])
        let c = core { r in seen.withLock { $0.append(r.offset) } }
        c.assigned([p0], incremental: false, rk: rk)
        c.push(record(p0, 0), rk: rk)
        c.setPaused([p0], true, rk: rk)  // no librdkafka call: only a full buffer pauses fetching
        c.push(record(p0, 1), rk: rk)
        c.push(record(p0, 2), rk: rk)
        c.flushHeldBack()
        #expect(seen.withLock { $0 } == [0])
        c.setPaused([p0], false, rk: rk)
        c.push(record(p0, 3), rk: rk)  // before the poll thread's flush: waits behind 1 and 2
        #expect(seen.withLock { $0 } == [0])
        c.flushHeldBack()
        c.push(record(p0, 4), rk: rk)
        #expect(seen.withLock { $0 } == [0, 1, 2, 3, 4])
    }

    @Test func theSinkMayPauseAgainInTheMiddleOfAFlush() throws {
        let rk = try #require(Self.noHandle)
        let seen = Mutex<[Int64]>([])
        let coreBox = Mutex<KafkaConsumer.Core?>(nil)
        // Like the dispatcher at its in-flight limit: pauses on the second record it takes.
        let c = core { r in
            let n = seen.withLock { $0.append(r.offset); return $0.count }
            if n == 2, let c = coreBox.withLock({ $0 }), let h = Self.noHandle { c.setPaused([r.topicPartition], true, rk: h) }
        }
        coreBox.withLock { $0 = c }
        c.assigned([p0], incremental: false, rk: rk)
        c.setPaused([p0], true, rk: rk)
        for o in Int64(0)..<4 { c.push(record(p0, o), rk: rk) }
        c.setPaused([p0], false, rk: rk)
        c.flushHeldBack()
        #expect(seen.withLock { $0 } == [0, 1])
        c.setPaused([p0], false, rk: rk)
        c.flushHeldBack()
        #expect(seen.withLock { $0 } == [0, 1, 2, 3])
        coreBox.withLock { $0 = nil }
    }

    @Test func aRevokeOfAPushingConsumerDoesNotWaitForTheHandOff() throws {
        let rk = try #require(Self.noHandle)
        let revoked = Mutex<[TopicPartition]>([])
        let c = core(deliver: { _ in }, onRevoking: { tps in revoked.withLock { $0 += tps } })
        c.assigned([p0], incremental: false, rk: rk)
        c.push(record(p0, 7), rk: rk)  // taken by the sink, never stored
        let started = ContinuousClock.now
        c.revoke([p0], lost: false)
        // A reader of `records` would have waited up to the 30 s drain timeout here.
        #expect(ContinuousClock.now - started < .seconds(5))
        #expect(revoked.withLock { $0 } == [p0])
    }
}

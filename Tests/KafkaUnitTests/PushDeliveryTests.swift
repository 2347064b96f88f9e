import Foundation
import Logging
import Synchronization
import Testing

@testable import Kafka

/// Push delivery (`Options.deliver`) without a broker: the state machine's decisions, and the
/// core handing records to the sink on the calling (poll) thread and revoking without the
/// hand-off wait.
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

    @Test func aPartitionThePausedApplicationStillGetsWhatWasFetched() {
        let m = pushing()
        #expect(m.v.setPaused([p0], true).isEmpty)
        #expect(m.v.reconcile().pause == [p0])
        // librdkafka has moved past it: holding it back or dropping it would lose it.
        #expect(isSink(m.v.push(record(p0, 0))))
        #expect(m.v.buffers.isEmpty)
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

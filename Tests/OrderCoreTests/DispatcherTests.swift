import Foundation
import Kafka
import Logging
import Synchronization
import TestSupport
import Testing

@testable import OrderCore

struct RetriableFailure: Error {}
struct FatalFailure: Error {}

func rid(_ r: KafkaRecord) -> String { "\(r.topic)/\(r.partition)@\(r.offset)" }

/// A RecordHandler that records what it was asked to do. `behaviour` runs inside `handle`
/// (attempt numbers start at 1) and may wait or throw.
final class FakeHandler: RecordHandler {
    typealias Behaviour = @Sendable (KafkaRecord, Int) async throws -> Void
    let behaviour: Behaviour
    /// Record ids in the order handling started (every attempt).
    let started = Log<String>()
    /// Record ids whose handle() returned outputs.
    let handled = Log<String>()
    let failures = Log<String>()
    private let attempts = Mutex<[String: Int]>([:])
    private let runningPerLane = Mutex<[String: Int]>([:])
    private let maxPerLane = Mutex<Int>(0)

    init(_ behaviour: @escaping Behaviour = { _, _ in }) { self.behaviour = behaviour }

    func laneKey(for record: KafkaRecord) -> String { record.key.map { String(decoding: $0, as: UTF8.self) } ?? "-" }

    func handle(_ record: KafkaRecord) async throws -> [KafkaOutgoingRecord] {
        let id = rid(record)
        let lane = laneKey(for: record)
        let attempt = attempts.withLock { a -> Int in
            a[id, default: 0] += 1
            return a[id]!
        }
        let now = runningPerLane.withLock { r -> Int in
            r[lane, default: 0] += 1
            return r[lane]!
        }
        maxPerLane.withLock { $0 = max($0, now) }
        defer { runningPerLane.withLock { $0[lane, default: 1] -= 1 } }
        started.append(id)
        try await behaviour(record, attempt)
        handled.append(id)
        return [KafkaOutgoingRecord(topic: "replies", key: record.key, value: Array("ok \(id)".utf8))]
    }

    func failure(_ record: KafkaRecord, error: any Error) -> [KafkaOutgoingRecord] {
        failures.append(rid(record))
        return [KafkaOutgoingRecord(topic: "replies", key: record.key, value: Array("failed \(rid(record))".utf8))]
    }

    let poisonedRecords = Log<String>()
    func poisoned(_ record: KafkaRecord) -> [KafkaOutgoingRecord] {
        poisonedRecords.append(rid(record))
        return [KafkaOutgoingRecord(topic: "replies", key: record.key, value: Array("poisoned \(rid(record))".utf8))]
    }

    func isRetriable(_ error: any Error) -> Bool { error is RetriableFailure }

    func attemptCount(_ id: String) -> Int { attempts.withLock { $0[id] ?? 0 } }
    var maxConcurrentInOneLane: Int { maxPerLane.withLock { $0 } }
}

struct Stored: Sendable, Equatable, CustomStringConvertible {
    var tp: TopicPartition
    var offset: Int64
    var description: String { "\(tp)→\(offset)" }
}

/// Fake Effects: records sends, stored offsets and pause signals in one ordered event log.
final class FakeEffects: Sendable {
    typealias SendBehaviour = @Sendable ([KafkaOutgoingRecord], Int) async throws -> Void
    let sendBehaviour: SendBehaviour
    let sent = Log<String>()
    let stored = Log<Stored>()
    let paused = Log<Bool>()
    let events = Log<String>()
    private let sendAttempts = Mutex<Int>(0)

    init(_ sendBehaviour: @escaping SendBehaviour = { _, _ in }) { self.sendBehaviour = sendBehaviour }

    var effects: Dispatcher.Effects {
        Dispatcher.Effects(
            send: { records in
                let attempt = self.sendAttempts.withLock { n -> Int in
                    n += 1
                    return n
                }
                try await self.sendBehaviour(records, attempt)
                for r in records {
                    let text = String(decoding: r.value ?? [], as: UTF8.self)
                    self.sent.append(text)
                    self.events.append("sent \(text)")
                }
            },
            storeOffset: { tp, offset in
                self.stored.append(Stored(tp: tp, offset: offset))
                self.events.append("store \(tp)→\(offset)")
            },
            setPaused: { _, p in
                self.paused.append(p)
                self.events.append("paused \(p)")
            })
    }

    var totalSendAttempts: Int { sendAttempts.withLock { $0 } }
    func stored(_ tp: TopicPartition) -> [Int64] { stored.all.filter { $0.tp == tp }.map(\.offset) }
}

func quietLogger() -> Logger {
    var logger = Logger(label: "dispatcher-test")
    logger.logLevel = .critical
    return logger
}

func fastConfiguration(maxInFlight: Int = 2_000) -> Dispatcher.Configuration {
    var c = Dispatcher.Configuration()
    c.maxInFlight = maxInFlight
    c.initialBackoff = .milliseconds(1)
    c.maxBackoff = .milliseconds(4)
    return c
}

func rec(_ tp: TopicPartition, _ offset: Int64, key: String?) -> KafkaRecord {
    KafkaRecord(topic: tp.topic, partition: tp.partition, offset: offset, key: key.map { Array($0.utf8) }, value: Array("v\(offset)".utf8))
}

/// Gates by record id, created on demand.
final class Gates: Sendable {
    private let gates = Mutex<[String: Gate]>([:])
    func gate(_ id: String) -> Gate {
        gates.withLock { g in
            if let existing = g[id] { return existing }
            let new = Gate()
            g[id] = new
            return new
        }
    }
    func wait(_ id: String) async { await gate(id).wait() }
    func open(_ id: String) async { await gate(id).open() }
}

/// A flag shared with escaping closures.
final class Flag: Sendable {
    private let state = Mutex(false)
    func set() { state.withLock { $0 = true } }
    var isSet: Bool { state.withLock { $0 } }
}

@Suite("Dispatcher", .timeLimit(.minutes(1)))
struct DispatcherTests {
    let p0 = TopicPartition("in", 0)
    let p1 = TopicPartition("in", 1)

    func make(
        _ handler: FakeHandler, _ effects: FakeEffects, maxInFlight: Int = 2_000, owning: [TopicPartition]? = nil
    ) -> Dispatcher {
        let d = Dispatcher(handler: handler, effects: effects.effects, configuration: fastConfiguration(maxInFlight: maxInFlight), logger: quietLogger())
        d.partitionsAssigned(owning ?? [p0, p1])
        return d
    }

    @Test func oneLaneRunsStrictlyInOffsetOrderWhileASlowLaneDoesNotBlockIt() async {
        let gates = Gates()
        let handler = FakeHandler { r, _ in
            if r.key == Array("slow".utf8) { await gates.wait(rid(r)) }
            await Task.yield()
        }
        let effects = FakeEffects()
        let d = make(handler, effects)
        let slowFirst = rec(p0, 0, key: "slow")
        await d.submit(slowFirst)
        for o in Int64(1)...50 { await d.submit(rec(p0, o, key: "user-a")) }
        await d.submit(rec(p0, 51, key: "slow"))  // queued behind the slow record

        let fastIds = (Int64(1)...50).map { rid(rec(p0, $0, key: nil)) }
        await eventually("all 50 records of the fast lane are answered") {
            Set(effects.sent.all).isSuperset(of: fastIds.map { "ok \($0)" })
        }
        #expect(handler.started.all.filter { $0 != rid(slowFirst) } == fastIds)
        #expect(handler.handled.all == fastIds)
        #expect(handler.maxConcurrentInOneLane == 1)
        // Offset 0 is still running: nothing of the partition may be committed yet.
        #expect(effects.stored(p0).isEmpty)
        // The 50th record's completion may come just after its reply was seen sent.
        await eventually("only the two gated records are in flight") { await d.inFlightCount == 2 }

        await gates.open(rid(slowFirst))
        await gates.open(rid(rec(p0, 51, key: nil)))
        await d.waitIdle()
        #expect(handler.handled.all == fastIds + [rid(slowFirst), rid(rec(p0, 51, key: nil))])
        #expect(effects.stored(p0) == [51, 52])
        #expect(await d.inFlightCount == 0)
        #expect(handler.maxConcurrentInOneLane == 1)
    }

    @Test func lanesRunConcurrently() async {
        let gates = Gates()
        let handler = FakeHandler { r, _ in await gates.wait(rid(r)) }
        let effects = FakeEffects()
        let d = make(handler, effects)
        let lanes = (0..<5).map { rec(p0, Int64($0), key: "lane-\($0)") }
        for r in lanes { await d.submit(r) }
        // Every lane's record starts although none has finished.
        await eventually("all five lanes started") { handler.started.count == 5 }
        #expect(handler.handled.count == 0)
        // Finish them in reverse: the offset only moves once offset 0 is done.
        for r in lanes.reversed() {
            await gates.open(rid(r))
            if r.offset > 0 {
                await eventually("record \(r.offset) answered") { effects.sent.all.contains("ok \(rid(r))") }
                #expect(effects.stored(p0).isEmpty)
            }
        }
        await d.waitIdle()
        #expect(effects.stored(p0) == [5])
    }

    @Test func storedOffsetsNeverPassAnUnfinishedRecordAndPartitionsAreIndependent() async {
        let gates = Gates()
        let handler = FakeHandler { r, _ in
            if r.key == Array("slow".utf8) { await gates.wait(rid(r)) }
        }
        let effects = FakeEffects()
        let d = make(handler, effects)
        await d.submit(rec(p0, 10, key: "x"))
        await d.submit(rec(p0, 11, key: "slow"))
        for o in Int64(12)..<20 { await d.submit(rec(p0, o, key: "k\(o % 3)")) }
        for o in Int64(0)..<5 { await d.submit(rec(p1, o, key: "k\(o % 2)")) }

        await eventually("partition 1 committed to 5") { effects.stored(p1).last == 5 }
        await eventually("p0 records other than 11 answered") { effects.sent.count == 1 + 8 + 5 }
        #expect(effects.stored(p0).allSatisfy { $0 <= 11 })
        #expect(effects.stored(p0).last == 11)
        for (a, b) in zip(effects.stored(p1), effects.stored(p1).dropFirst()) { #expect(a < b) }

        await gates.open(rid(rec(p0, 11, key: nil)))
        await d.waitIdle()
        #expect(effects.stored(p0).last == 20)
        for (a, b) in zip(effects.stored(p0), effects.stored(p0).dropFirst()) { #expect(a < b) }
    }

    @Test func anOffsetIsStoredOnlyAfterItsAnswerWasSent() async {
        let gates = Gates()
        let effects = FakeEffects { records, _ in
            if records.first?.value == Array("ok in/0@0".utf8) { await gates.wait("send") }
        }
        let handler = FakeHandler()
        let d = make(handler, effects)
        await d.submit(rec(p0, 0, key: "a"))
        await d.submit(rec(p0, 1, key: "b"))
        await eventually("both handled") { handler.handled.count == 2 }
        await eventually("record 1 sent") { effects.sent.all == ["ok in/0@1"] }
        #expect(effects.stored(p0).isEmpty)
        await gates.open("send")
        await d.waitIdle()
        #expect(effects.stored(p0) == [2])
        let events = effects.events.all
        let sentIndex = events.firstIndex(of: "sent ok in/0@0")
        let storeIndex = events.firstIndex(of: "store in[0]→2")
        #expect(sentIndex != nil && storeIndex != nil && sentIndex! < storeIndex!)
    }

    @Test func aRetriableErrorIsRetriedUntilItSucceeds() async {
        let handler = FakeHandler { _, attempt in
            if attempt < 4 { throw RetriableFailure() }
        }
        let effects = FakeEffects()
        let d = make(handler, effects)
        await d.submit(rec(p0, 7, key: "a"))
        await d.waitIdle()
        #expect(handler.attemptCount("in/0@7") == 4)
        #expect(handler.failures.all.isEmpty)
        #expect(effects.sent.all == ["ok in/0@7"])
        #expect(effects.stored(p0) == [8])
    }

    @Test func aRetryingRecordHoldsBackItsLaneButNotOthers() async {
        let release = Flag()
        let handler = FakeHandler { r, _ in
            if r.offset == 0, !release.isSet { throw RetriableFailure() }
        }
        let effects = FakeEffects()
        let d = make(handler, effects)
        await d.submit(rec(p0, 0, key: "a"))
        await d.submit(rec(p0, 1, key: "a"))
        await d.submit(rec(p0, 2, key: "b"))
        await eventually("other lane answered") { effects.sent.all.contains("ok in/0@2") }
        await eventually("several retries") { handler.attemptCount("in/0@0") >= 3 }
        #expect(handler.attemptCount("in/0@1") == 0)
        #expect(effects.stored(p0).isEmpty)
        release.set()
        await d.waitIdle()
        #expect(effects.sent.all.suffix(2) == ["ok in/0@0", "ok in/0@1"])
        #expect(effects.stored(p0).last == 3)
    }

    @Test func aNonRetriableErrorIsAnsweredThroughFailure() async {
        let handler = FakeHandler { r, _ in
            if r.offset == 3 { throw FatalFailure() }
        }
        let effects = FakeEffects()
        let d = make(handler, effects)
        for o in Int64(2)...4 { await d.submit(rec(p0, o, key: "a")) }
        await d.waitIdle()
        #expect(handler.attemptCount("in/0@3") == 1)
        #expect(handler.failures.all == ["in/0@3"])
        #expect(effects.sent.all == ["ok in/0@2", "failed in/0@3", "ok in/0@4"])
        #expect(effects.stored(p0) == [3, 4, 5])
    }

    @Test func failedSendsAreRetriedWithoutHandlingAgain() async {
        let effects = FakeEffects { _, attempt in
            if attempt <= 3 { throw RetriableFailure() }
        }
        let handler = FakeHandler()
        let d = make(handler, effects)
        await d.submit(rec(p0, 0, key: "a"))
        await d.waitIdle()
        #expect(handler.attemptCount("in/0@0") == 1)
        #expect(effects.totalSendAttempts == 4)
        #expect(effects.sent.all == ["ok in/0@0"])
        #expect(effects.stored(p0) == [1])
    }

    @Test func failedSendsOfFailureOutputsAreRetriedToo() async {
        let effects = FakeEffects { _, attempt in
            if attempt <= 2 { throw RetriableFailure() }
        }
        let handler = FakeHandler { _, _ in throw FatalFailure() }
        let d = make(handler, effects)
        await d.submit(rec(p0, 0, key: "a"))
        await d.waitIdle()
        #expect(handler.attemptCount("in/0@0") == 1)
        #expect(handler.failures.all == ["in/0@0"])
        #expect(effects.sent.all == ["failed in/0@0"])
        #expect(effects.stored(p0) == [1])
    }

    @Test func fetchingPausesAtMaxInFlightAndResumesAtHalf() async {
        let gates = Gates()
        let handler = FakeHandler { r, _ in await gates.wait(rid(r)) }
        let effects = FakeEffects()
        let d = make(handler, effects, maxInFlight: 4)
        for o in Int64(0)..<3 { await d.submit(rec(p0, o, key: "one-lane")) }
        #expect(effects.paused.all == [])
        await d.submit(rec(p1, 0, key: "other-lane"))
        #expect(effects.paused.all == [true])
        #expect(await d.inFlightCount == 4)

        await gates.open("in/0@0")
        await eventually("record 1 started") { handler.started.all.contains("in/0@1") }
        #expect(effects.paused.all == [true])  // 3 in flight: more than half
        await gates.open("in/0@1")
        await eventually("record 2 started") { handler.started.all.contains("in/0@2") }
        #expect(effects.paused.all == [true, false])  // 2 in flight: half

        await d.submit(rec(p0, 3, key: "one-lane"))
        #expect(effects.paused.all == [true, false])
        await d.submit(rec(p0, 4, key: "one-lane"))
        #expect(effects.paused.all == [true, false, true])

        for id in ["in/0@2", "in/0@3", "in/0@4", "in/1@0"] { await gates.open(id) }
        await d.waitIdle()
        #expect(effects.paused.all == [true, false, true, false])
        #expect(await d.inFlightCount == 0)
        #expect(effects.stored(p0).last == 5)
        #expect(effects.stored(p1) == [1])
    }

    @Test func drainWaitsForRunningRecordsAndDropsQueuedOnes() async {
        let gates = Gates()
        let handler = FakeHandler { r, _ in await gates.wait(rid(r)) }
        let effects = FakeEffects()
        let d = make(handler, effects)
        await d.submit(rec(p0, 0, key: "a"))
        await d.submit(rec(p0, 1, key: "a"))  // queued behind 0
        await d.submit(rec(p0, 2, key: "a"))  // queued behind 0
        await d.submit(rec(p0, 3, key: "b"))
        await eventually("both lanes started") { handler.started.count == 2 }

        let drained = Flag()
        let drain = Task {
            await d.drain()
            drained.set()
        }
        // Wait until the dispatcher stopped taking records: a probe it accepts is queued in lane
        // "a" behind the running record (so it cannot run before the drain empties the lanes).
        var probe: Int64 = 100
        var stopped = false
        while !stopped, probe < 100_000 {
            let before = await d.inFlightCount
            await d.submit(rec(p0, probe, key: "a"))
            stopped = await d.inFlightCount == before
            probe += 1
            if !stopped { await Task.yield() }
        }
        #expect(stopped)
        #expect(!drained.isSet)

        await gates.open("in/0@0")
        await gates.open("in/0@3")
        await drain.value
        #expect(drained.isSet)
        #expect(Set(handler.started.all) == ["in/0@0", "in/0@3"])
        #expect(Set(effects.sent.all) == ["ok in/0@0", "ok in/0@3"])
        // Offset 1 never ran, so nothing past it is committed.
        #expect(effects.stored(p0).allSatisfy { $0 <= 1 })
        #expect(effects.stored(p0).contains(1))

        // After draining, new records are ignored.
        await d.submit(rec(p0, 200_000, key: "c"))
        await d.waitIdle()
        #expect(!handler.started.all.contains("in/0@200000"))
    }

    @Test func drainGivesUpOnARecordThatKeepsFailing() async {
        let handler = FakeHandler { _, _ in throw RetriableFailure() }
        let effects = FakeEffects()
        let d = make(handler, effects)
        await d.submit(rec(p0, 0, key: "a"))
        await eventually("retrying") { handler.attemptCount("in/0@0") >= 2 }
        await d.drain()
        #expect(effects.sent.all.isEmpty)
        #expect(effects.stored(p0).isEmpty)
    }

    @Test func drainOfAnIdleDispatcherReturns() async throws {
        let handler = FakeHandler()
        let effects = FakeEffects()
        let d = make(handler, effects)
        #expect(await d.inFlightCount == 0)
        // Bounded: a drain that waits for work that does not exist fails here with a message
        // instead of hanging until the suite's time limit.
        try await TestKafka.within(.seconds(10), "drain of an idle dispatcher") { await d.drain() }
        try await TestKafka.within(.seconds(10), "waitIdle after drain") { await d.waitIdle() }
        #expect(await d.inFlightCount == 0)
        #expect(handler.started.all.isEmpty)
        #expect(effects.sent.all.isEmpty)
        #expect(effects.stored.all.isEmpty)
        #expect(effects.paused.all.isEmpty)

        // Drained means stopped: a record submitted afterwards is not handled or answered.
        await d.submit(rec(p0, 0, key: "a"))
        try await TestKafka.within(.seconds(10), "waitIdle after a late submit") { await d.waitIdle() }
        #expect(await d.inFlightCount == 0)
        #expect(handler.started.all.isEmpty)
        #expect(effects.sent.all.isEmpty)
    }

    @Test func recordsOfPartitionsNotOwnedAreAnsweredButTheirOffsetsAreNotStored() async {
        let handler = FakeHandler()
        let effects = FakeEffects()
        let d = make(handler, effects, owning: [])
        #expect(!d.isOwned(p0))
        for o in Int64(0)..<3 { await d.submit(rec(p0, o, key: "k\(o)")) }
        await d.waitIdle()
        #expect(handler.handled.count == 3)
        #expect(effects.sent.count == 3)
        #expect(effects.stored.all.isEmpty)

        d.partitionsAssigned([p0])
        #expect(d.isOwned(p0))
        #expect(!d.isOwned(p1))
        await d.submit(rec(p0, 3, key: "k"))
        await d.submit(rec(p1, 0, key: "k"))
        await d.waitIdle()
        #expect(effects.stored.all == [Stored(tp: p0, offset: 4)])
    }

    @Test func revokingWaitsForRunningRecordsAndDropsQueuedOnes() async {
        let p9 = TopicPartition("in", 9)
        let gates = Gates()
        let handler = FakeHandler { r, _ in await gates.wait(rid(r)) }
        let effects = FakeEffects()
        let d = make(handler, effects, owning: [p0, p9])
        await d.submit(rec(p0, 0, key: "a"))
        await d.submit(rec(p0, 1, key: "a"))  // queued
        await d.submit(rec(p9, 0, key: "a"))  // queued; its partition has nothing running
        await eventually("record 0 started") { handler.started.count == 1 }

        let revoked = Flag()
        let thread = Thread {
            d.partitionsRevoking([p0, p9], timeout: .seconds(60))
            revoked.set()
        }
        thread.start()
        #expect(await eventually("ownership given up") { !d.isOwned(p0) && !d.isOwned(p9) })
        // Queued records are dropped: only the running one is still in flight.
        await eventually("queued records dropped") { await d.inFlightCount == 1 }
        #expect(!revoked.isSet)

        await gates.open("in/0@0")
        await eventually("revoke returned") { revoked.isSet }
        await d.waitIdle()
        #expect(handler.started.all == ["in/0@0"])
        #expect(effects.sent.all == ["ok in/0@0"])
        // Offsets of a partition being revoked are still stored while it drains: the next owner
        // starts at the dropped record.
        #expect(effects.stored(p0) == [1])
        #expect(!d.isOwned(p0))

        #expect(await d.inFlightCount == 0)

        // The partition comes back later, at an offset another consumer committed meanwhile.
        d.partitionsAssigned([p0])
        await gates.open("in/0@500")
        await d.submit(rec(p0, 500, key: "b"))
        await d.waitIdle()
        #expect(effects.sent.all.last == "ok in/0@500")
        #expect(effects.stored(p0) == [1, 501])
    }

    @Test func aRevokeDuringBackpressureDoesNotLeaveFetchingPaused() async {
        let p9 = TopicPartition("in", 9)
        let gates = Gates()
        let handler = FakeHandler { r, _ in await gates.wait(rid(r)) }
        let effects = FakeEffects()
        let d = make(handler, effects, maxInFlight: 4, owning: [p0, p9])
        for o in Int64(0)..<4 { await d.submit(rec(p0, o, key: "a")) }
        await d.submit(rec(p9, 0, key: "a"))
        #expect(effects.paused.all == [true])
        await eventually("record 0 started") { handler.started.count == 1 }

        let revoked = Flag()
        Thread {
            d.partitionsRevoking([p0, p9], timeout: .seconds(60))
            revoked.set()
        }.start()
        await eventually("queued records dropped") { await d.inFlightCount == 1 }  // only the running one
        await gates.open("in/0@0")
        await eventually("revoke returned") { revoked.isSet }
        await d.waitIdle()
        #expect(handler.started.all == ["in/0@0"])
        #expect(effects.stored(p0) == [1])

        // Nothing is in flight any more, so fetching must not stay paused.
        let paused = effects.paused.all
        let inFlight = await d.inFlightCount
        #expect(inFlight == 0)
        #expect(paused.last == false)
    }
}

@Suite("Dispatcher progress (for the health check)")
struct DispatcherProgressTests {
    let p0 = TopicPartition("in", 0)

    @Test func aRunningRecordIsStuckSinceItStartedOrLastRetriedAndClearsWhenDone() async throws {
        let gates = Gates()
        let firstAttempt = Mutex<ContinuousClock.Instant?>(nil)
        let handler = FakeHandler { r, attempt in
            if attempt == 1 {
                firstAttempt.withLock { $0 = .now }
                throw RetriableFailure()
            }
            await gates.wait(rid(r))
        }
        let effects = FakeEffects()
        let d = Dispatcher(handler: handler, effects: effects.effects, configuration: fastConfiguration(), logger: quietLogger())
        d.partitionsAssigned([p0])
        #expect(await d.progress == Dispatcher.Progress(inFlight: 0, completed: 0, stuckSince: nil))
        let r = rec(p0, 0, key: "a")
        await d.submit(r)
        await eventually("the second attempt runs") { handler.attemptCount(rid(r)) == 2 }
        let running = await d.progress
        #expect(running.inFlight == 1)
        // Moved by the retry: later than the first attempt (which began after the record started).
        let first = try #require(firstAttempt.withLock { $0 })
        #expect((running.stuckSince ?? first) > first)
        await gates.open(rid(r))
        await d.waitIdle()
        #expect(await d.progress == Dispatcher.Progress(inFlight: 0, completed: 1, stuckSince: nil))
    }
}

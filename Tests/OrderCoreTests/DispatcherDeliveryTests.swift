import Foundation
import Kafka
import Logging
import Synchronization
import Testing

@testable import OrderCore

/// A broker stand-in for `Effects.deliver`: a thread of its own, like the producer's poll thread,
/// brings every send's report, as `verdict` decides (acknowledge, fail, or hold it until the
/// test releases it). Outputs are named "topic:value".
final class ReportThread: Sendable {
    enum Verdict: Sendable {
        case ack
        case fail(any Error)
        case hold
    }
    static let name = "report thread"
    typealias Delivered = Dispatcher.Effects.Delivered

    private struct Pending {
        var queue: [(String, Delivered)] = []
        var held: [(String, Delivered)] = []
        var released: Set<String> = []
        var attempts: [String: Int] = [:]
    }
    private let verdict: @Sendable (String, Int) -> Verdict
    private let pending = Mutex(Pending())
    private let stopFlag = Atomic<Bool>(false)
    private let threadID = Atomic<UInt>(0)
    /// Outputs acknowledged, in order.
    let acked = Log<String>()
    /// Every send, in order.
    let sends = Log<String>()

    init(_ verdict: @escaping @Sendable (_ output: String, _ attempt: Int) -> Verdict = { _, _ in .ack }) {
        self.verdict = verdict
        let thread = Thread { [self] in
            threadID.store(UInt(pthread_self()), ordering: .releasing)
            while !stopFlag.load(ordering: .relaxed) {
                serve()
                usleep(200)
            }
        }
        thread.start()
    }

    /// Where the caller runs: this thread, or another one.
    var currentThread: String { UInt(pthread_self()) == threadID.load(ordering: .acquiring) ? Self.name : "another thread" }

    deinit { stopFlag.store(true, ordering: .relaxed) }

    static func name(_ record: KafkaOutgoingRecord) -> String { "\(record.topic):\(String(decoding: record.value ?? [], as: UTF8.self))" }

    func deliver(_ record: KafkaOutgoingRecord, _ done: @escaping Delivered) {
        let name = Self.name(record)
        sends.append(name)
        pending.withLock { $0.queue.append((name, done)) }
    }

    /// Lets the held report of this output come (an acknowledgement).
    func release(_ output: String) { pending.withLock { _ = $0.released.insert(output) } }

    /// Outputs whose reports are held now.
    var holding: [String] { pending.withLock { $0.held.map(\.0) } }

    private func serve() {
        let (due, released) = pending.withLock { p -> ([(String, Delivered, Int)], [(String, Delivered)]) in
            let due = p.queue.map { item -> (String, Delivered, Int) in
                p.attempts[item.0, default: 0] += 1
                return (item.0, item.1, p.attempts[item.0] ?? 1)
            }
            p.queue = []
            let released = p.held.filter { p.released.contains($0.0) }
            p.held.removeAll { p.released.contains($0.0) }
            return (due, released)
        }
        for (name, done) in released {
            acked.append(name)
            done(nil)
        }
        for (name, done, attempt) in due {
            switch verdict(name, attempt) {
            case .ack:
                acked.append(name)
                done(nil)
            case .fail(let error): done(error)
            case .hold: pending.withLock { $0.held.append((name, done)) }
            }
        }
    }
}

/// The dispatcher completing records from their delivery reports, which come on a thread that is
/// not the cooperative pool's (the producer's poll thread in the service).
@Suite("Dispatcher: completion from delivery reports", .timeLimit(.minutes(1)))
struct DispatcherDeliveryTests {
    let p0 = TopicPartition("in", 0)

    /// Stored offsets with the name of the thread that stored each.
    final class Stores: Sendable {
        let log = Log<(offset: Int64, thread: String)>()
        var offsets: [Int64] { log.all.map(\.offset) }
        var threads: Set<String> { Set(log.all.map(\.thread)) }
    }

    func make(_ handler: any RecordHandler, _ reports: ReportThread, _ stores: Stores) -> Dispatcher {
        let d = Dispatcher(
            handler: handler,
            effects: Dispatcher.Effects(
                deliver: { reports.deliver($0, $1) },
                storeOffset: { _, offset in stores.log.append((offset, reports.currentThread)) }),
            configuration: fastConfiguration(), logger: quietLogger())
        d.partitionsAssigned([p0])
        return d
    }

    @Test func theLastReportStoresTheOffsetAndStartsTheLanesNextRecord() async {
        let reports = ReportThread { output, _ in output == "replies:ok in/0@0" ? .hold : .ack }
        let handler = FakeHandler()
        let stores = Stores()
        let d = make(handler, reports, stores)
        d.submit(rec(p0, 0, key: "a"))
        d.submit(rec(p0, 1, key: "a"))  // same lane: waits for record 0's acknowledgement
        await eventually("record 0's reply sent") { reports.holding == ["replies:ok in/0@0"] }
        try? await Task.sleep(for: .milliseconds(50))
        #expect(handler.started.all == ["in/0@0"], "the lane's next record waits for the acknowledgement")
        #expect(stores.offsets.isEmpty)
        #expect(d.inFlightCount == 2)

        reports.release("replies:ok in/0@0")
        await d.waitIdle()
        #expect(handler.started.all == ["in/0@0", "in/0@1"])
        #expect(reports.acked.all == ["replies:ok in/0@0", "replies:ok in/0@1"])
        #expect(stores.offsets == [1, 2])
        #expect(stores.threads == [ReportThread.name], "completed on the thread that brought the report")
        #expect(d.progress == Dispatcher.Progress(inFlight: 0, completed: 2, stuckSince: nil))
    }

    @Test func aRetriableFailureInTheReportResendsOnlyTheUnacknowledgedOutput() async {
        let reports = ReportThread { output, attempt in
            output == "dlq:copy" && attempt <= 2 ? .fail(KafkaError(code: -185, message: "transient", isRetriable: true)) : .ack
        }
        let stores = Stores()
        let d = make(ReplyToHandler(), reports, stores)
        d.submit(KafkaRecord(topic: "in", partition: 0, offset: 0, key: nil, value: nil))
        await d.waitIdle()
        #expect(reports.sends.all == ["client-replies:reply", "dlq:copy", "dlq:copy", "dlq:copy"])
        #expect(reports.acked.all == ["client-replies:reply", "dlq:copy"])
        #expect(stores.offsets == [1])
    }

    @Test func aReplyRefusedInTheReportFallsBackToUndeliverable() async {
        let reports = ReportThread { output, _ in
            output.hasPrefix("client-replies:") ? .fail(KafkaError(code: 10, message: "MSG_SIZE_TOO_LARGE", isRetriable: false)) : .ack
        }
        let handler = ReplyToHandler()
        let stores = Stores()
        let d = make(handler, reports, stores)
        d.submit(KafkaRecord(topic: "in", partition: 0, offset: 0, key: nil, value: nil))
        d.submit(KafkaRecord(topic: "in", partition: 0, offset: 1, key: nil, value: nil))
        await d.waitIdle()
        #expect(reports.acked.all == [
            "default-replies:fallback-reply", "dlq:refused-copy", "default-replies:fallback-reply", "dlq:refused-copy",
        ])
        #expect(!reports.sends.all.contains("dlq:copy"), "the fallback answer replaces all outputs")
        #expect(handler.undeliverableCalls.withLock { $0.count } == 2)
        #expect(stores.offsets == [1, 2])
    }

    /// Gives a client's topic three tries (as `RequestPipeline` gives it a few), then falls back.
    private struct GivesUpOnClientTopics: RecordHandler {
        let inner = ReplyToHandler()
        func laneKey(for record: KafkaRecord) -> String { inner.laneKey(for: record) }
        func handle(_ record: KafkaRecord) async throws -> [KafkaOutgoingRecord] { try await inner.handle(record) }
        func failure(_ record: KafkaRecord, error: any Error) -> [KafkaOutgoingRecord] { inner.failure(record, error: error) }
        func undeliverable(_ record: KafkaRecord, error: any Error) -> [KafkaOutgoingRecord] { inner.undeliverable(record, error: error) }
        func isRetriable(_ error: any Error) -> Bool { inner.isRetriable(error) }
        func isRetriable(_ error: any Error, sending output: KafkaOutgoingRecord, failures: Int) -> Bool {
            output.topic == "client-replies" && failures >= 3 ? false : isRetriable(error)
        }
    }

    @Test func aClientTopicThatKeepsFailingFallsBackAfterTheHandlersTriesInsteadOfStallingForEver() async {
        let reports = ReportThread { output, _ in
            output.hasPrefix("client-replies:") ? .fail(KafkaError(code: -192, message: "Local: Message timed out", isRetriable: true)) : .ack
        }
        let stores = Stores()
        let d = make(GivesUpOnClientTopics(), reports, stores)
        d.submit(KafkaRecord(topic: "in", partition: 0, offset: 0, key: nil, value: nil))
        await d.waitIdle()
        #expect(reports.sends.all == [
            "client-replies:reply", "client-replies:reply", "client-replies:reply", "default-replies:fallback-reply", "dlq:refused-copy",
        ])
        #expect(stores.offsets == [1])
    }

    @Test func aRevokeWaitsForARecordWhoseAcknowledgementIsOutstanding() async {
        let reports = ReportThread { _, _ in .hold }
        let handler = FakeHandler()
        let stores = Stores()
        let d = make(handler, reports, stores)
        d.submit(rec(p0, 0, key: "a"))
        d.submit(rec(p0, 1, key: "a"))  // queued: dropped by the revoke
        await eventually("the reply is out") { reports.holding == ["replies:ok in/0@0"] }
        #expect(handler.handled.all == ["in/0@0"])

        let revoked = Flag()
        Thread {
            d.partitionsRevoking([p0], timeout: .seconds(30))
            revoked.set()
        }.start()
        await eventually("queued record dropped") { d.inFlightCount == 1 }
        try? await Task.sleep(for: .milliseconds(100))
        #expect(!revoked.isSet, "the revoke waits for the acknowledgement")
        #expect(stores.offsets.isEmpty)

        reports.release("replies:ok in/0@0")
        await eventually("revoke returned") { revoked.isSet }
        #expect(stores.offsets == [1], "stored before the partition moved")
        #expect(handler.started.all == ["in/0@0"])
    }

    @Test func drainWaitsForARecordWhoseAcknowledgementIsOutstanding() async {
        let reports = ReportThread { _, _ in .hold }
        let handler = FakeHandler()
        let stores = Stores()
        let d = make(handler, reports, stores)
        d.submit(rec(p0, 0, key: "a"))
        await eventually("the reply is out") { reports.holding == ["replies:ok in/0@0"] }

        let drained = Flag()
        let drain = Task {
            await d.drain()
            drained.set()
        }
        try? await Task.sleep(for: .milliseconds(100))
        #expect(!drained.isSet, "the drain waits for the acknowledgement")
        reports.release("replies:ok in/0@0")
        await drain.value
        #expect(stores.offsets == [1])
        #expect(reports.acked.all == ["replies:ok in/0@0"])
    }

    @Test func underLoadEveryRecordIsAnsweredOnceInLaneOrderAndOffsetsOnlyGrow() async {
        let p1 = TopicPartition("in", 1)
        let reports = ReportThread()
        let handler = FakeHandler { _, _ in await Task.yield() }
        let stored = Log<Stored>()
        let d = Dispatcher(
            handler: handler,
            effects: Dispatcher.Effects(deliver: { reports.deliver($0, $1) }, storeOffset: { stored.append(Stored(tp: $0, offset: $1)) }),
            configuration: fastConfiguration(maxInFlight: 300), logger: quietLogger())
        d.partitionsAssigned([p0, p1])
        let perPartition: Int64 = 1_000
        for o in 0..<perPartition {
            d.submit(rec(p0, o, key: "u\(o % 40)"))
            d.submit(rec(p1, o, key: "u\(o % 7)"))
        }
        await d.waitIdle()
        let acked = reports.acked.all
        #expect(acked.count == 2 * Int(perPartition))
        #expect(Set(acked).count == acked.count, "no reply twice")
        // Per lane (key) and partition, replies in offset order.
        for (tp, lanes) in [(p0, 40), (p1, 7)] {
            for lane in 0..<lanes {
                let offsets = acked.compactMap { a -> Int64? in
                    let prefix = "replies:ok \(tp.topic)/\(tp.partition)@"
                    guard a.hasPrefix(prefix), let o = Int64(a.dropFirst(prefix.count)), o % Int64(lanes) == Int64(lane) else { return nil }
                    return o
                }
                #expect(offsets == offsets.sorted(), "lane u\(lane) of \(tp)")
            }
            let stores = stored.all.filter { $0.tp == tp }.map(\.offset)
            #expect(stores == stores.sorted() && Set(stores).count == stores.count, "stores of \(tp) only grow")
            #expect(stores.last == perPartition)
        }
        #expect(d.inFlightCount == 0)
    }

    /// Answers nothing (as a record that needs no reply).
    private struct Silent: RecordHandler {
        let handled = Log<Int64>()
        func laneKey(for record: KafkaRecord) -> String { "k" }
        func handle(_ record: KafkaRecord) async throws -> [KafkaOutgoingRecord] {
            handled.append(record.offset)
            return []
        }
        func failure(_ record: KafkaRecord, error: any Error) -> [KafkaOutgoingRecord] { [] }
        func isRetriable(_ error: any Error) -> Bool { false }
    }

    @Test func aRecordWithNothingToSendCompletesInItsLane() async {
        let reports = ReportThread()
        let stores = Stores()
        let handler = Silent()
        let d = make(handler, reports, stores)
        for o in Int64(0)..<3 { d.submit(rec(p0, o, key: "a")) }
        await d.waitIdle()
        #expect(handler.handled.all == [0, 1, 2])
        #expect(reports.sends.all.isEmpty)
        #expect(stores.offsets == [1, 2, 3])
        #expect(!stores.threads.contains(ReportThread.name))
    }

    @Test func aSendThatFailsAtOnceIsRetriedFromATask() async {
        // An enqueue error comes back on the caller's thread, inside `deliver`.
        let failures = Mutex(0)
        let stores = Stores()
        let handler = FakeHandler()
        let d = Dispatcher(
            handler: handler,
            effects: Dispatcher.Effects(
                deliver: { _, done in
                    let n = failures.withLock { n -> Int in
                        n += 1
                        return n
                    }
                    done(n <= 3 ? RetriableFailure() : nil)
                },
                storeOffset: { _, offset in stores.log.append((offset, "")) }),
            configuration: fastConfiguration(), logger: quietLogger())
        d.partitionsAssigned([p0])
        d.submit(rec(p0, 0, key: "a"))
        await d.waitIdle()
        #expect(failures.withLock { $0 } == 4)
        #expect(handler.failures.all.isEmpty, "retried, not answered as a failure")
        #expect(stores.offsets == [1])
    }
}

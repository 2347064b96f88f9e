import Foundation
import Kafka
import Synchronization
import Testing
import TestSupport

/// Against the real broker (Tansu locally). Serialized: group rebalances are timing-sensitive and
/// the machine is small.
@Suite("Against the broker", .serialized, .timeLimit(.minutes(1)))
struct BrokerTests {
    let logger = TestKafka.logger()

    init() async throws { try await TestKafka.requireBroker() }

    private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }
    private func text(_ b: [UInt8]?) -> String? { b.map { String(decoding: $0, as: UTF8.self) } }

    @Test func keysHeadersAndNullsSurviveTheRoundTrip() async throws {
        let topic = TestKafka.uniqueName("t")
        try await TestKafka.createTopic(topic, partitions: 1)
        let producer = try KafkaProducer(configuration: TestKafka.configuration(), logger: logger)
        let headers = [
            KafkaHeader("content-type", "application/json"), KafkaHeader(key: "null-header", value: nil),
            KafkaHeader(key: "empty-header", value: []), KafkaHeader("content-type", "text/plain"),
        ]
        let outgoing = [
            KafkaOutgoingRecord(topic: topic, key: bytes("user-1"), value: bytes(#"{"a":1}"#), headers: headers),
            KafkaOutgoingRecord(topic: topic, key: nil, value: bytes("no key")),
            KafkaOutgoingRecord(topic: topic, key: bytes("tombstone"), value: nil),
            KafkaOutgoingRecord(topic: topic, key: [], value: []),
            KafkaOutgoingRecord(topic: topic, key: [0, 0xff, 0], value: [0, 1, 2, 0], headers: [KafkaHeader(key: "bin", value: [0, 0xff])]),
        ]
        let reports = try await producer.sendAll(outgoing)
        #expect(reports.map(\.topic) == Array(repeating: topic, count: outgoing.count))
        #expect(reports.map(\.partition) == Array(repeating: 0, count: outgoing.count))
        #expect(reports.map(\.offset) == Array(0..<Int64(outgoing.count)))
        let last = try await producer.send(KafkaOutgoingRecord(topic: topic, partition: 0, key: nil, value: nil))
        #expect(last == DeliveryReport(topic: topic, partition: 0, offset: Int64(outgoing.count)))
        await producer.close()

        let consumer = try KafkaConsumer(configuration: TestKafka.configuration(), logger: logger)
        try consumer.assign([TopicPartition(topic, 0): KafkaOffset.beginning])
        let got = try await TestKafka.collect(consumer, count: outgoing.count + 1)
        await consumer.close()

        #expect(got.map(\.offset) == Array(0...Int64(outgoing.count)))
        #expect(got.allSatisfy { $0.topic == topic && $0.partition == 0 && $0.timestampMs != nil })
        for (sent, received) in zip(outgoing, got) {
            #expect(received.key == sent.key, "key at offset \(received.offset)")
            #expect(received.value == sent.value, "value at offset \(received.offset)")
            #expect(received.headers == sent.headers, "headers at offset \(received.offset)")
        }
        #expect(got[0].header("content-type")?.stringValue == "text/plain")
        #expect(got[0].header("null-header") != nil && got[0].header("null-header")?.value == nil)
        #expect(got[0].header("empty-header")?.value == [])
        #expect(got[0].header("missing") == nil)
        #expect(got[1].key == nil)
        #expect(got[2].value == nil)
        #expect(got[3].key == [] && got[3].value == [])
        #expect(got[5].key == nil && got[5].value == nil && got[5].headers.isEmpty)
    }

    @Test func sendAllKeepsInputOrder() async throws {
        let topic = TestKafka.uniqueName("t")
        try await TestKafka.createTopic(topic, partitions: 1)
        let producer = try KafkaProducer(configuration: TestKafka.configuration(), logger: logger)
        let n = 300
        let reports = try await producer.sendAll((0..<n).map {
            KafkaOutgoingRecord(topic: topic, key: bytes("same-key"), value: bytes("\($0)"))
        })
        #expect(reports.map(\.offset) == Array(0..<Int64(n)))
        await producer.close()

        let consumer = try KafkaConsumer(configuration: TestKafka.configuration(), logger: logger)
        try consumer.assign([TopicPartition(topic, 0): KafkaOffset.beginning])
        let got = try await TestKafka.collect(consumer, count: n)
        await consumer.close()
        #expect(got.map { text($0.value) } == (0..<n).map { "\($0)" })
    }

    @Test func sendEachTellsEveryRecordsOwnOutcomeAndARefusedOneDoesNotStopTheRest() async throws {
        let topic = TestKafka.uniqueName("t")
        try await TestKafka.createTopic(topic, partitions: 1)
        var config = TestKafka.configuration()
        config["message.max.bytes"] = "10000"
        let producer = try KafkaProducer(configuration: config, logger: logger)
        // The second is over the producer's own limit: refused at enqueue, for good.
        let values = ["a", String(repeating: "x", count: 20_000), "b", "c"]
        let results = await producer.sendEach(values.map { KafkaOutgoingRecord(topic: topic, key: nil, value: bytes($0)) })
        await producer.close()
        #expect(results.count == 4)
        guard case .failure(let refused) = results[1] else { Issue.record("the large record was sent"); return }
        #expect(refused.code == KafkaError.messageSizeTooLargeCode && !refused.isRetriable)
        let offsets = [results[0], results[2], results[3]].compactMap { try? $0.get().offset }
        #expect(offsets == [0, 1, 2], "the others were sent, in order")
    }

    @Test func producerRejectsSendsAfterClose() async throws {
        let topic = TestKafka.uniqueName("t")
        try await TestKafka.createTopic(topic, partitions: 1)
        let producer = try KafkaProducer(configuration: TestKafka.configuration(), logger: logger)
        _ = try await producer.send(KafkaOutgoingRecord(topic: topic, key: nil, value: bytes("before")))
        await producer.close()
        let error = await #expect(throws: KafkaError.self) {
            try await TestKafka.within(.seconds(5), "send after close") {
                try await producer.send(KafkaOutgoingRecord(topic: topic, key: nil, value: self.bytes("after")))
            }
        }
        #expect(error?.code == KafkaError.destroyedCode)
        await producer.close()  // twice is fine
    }

    /// Two members split a 4-partition topic; a member joins while records are being handled and
    /// later one leaves. With offsets stored after handling (and committed by hand), every record
    /// is handled exactly once across both rebalances.
    @Test(arguments: ["range", "cooperative-sticky"])
    func groupSplitsPartitionsAndRebalancesExactlyOnce(strategy: String) async throws {
        let topic = TestKafka.uniqueName("t")
        let group = TestKafka.uniqueName("g")
        try await TestKafka.createTopic(topic, partitions: 4)
        let producer = try KafkaProducer(configuration: TestKafka.configuration(), logger: logger)
        let phase1 = 300
        let phase2 = 200
        _ = try await producer.sendAll((0..<phase1).map {
            KafkaOutgoingRecord(topic: topic, key: bytes("k\($0)"), value: bytes("p1-\($0)"))
        })

        let handled = Mutex<[String: [String]]>([:])  // "partition/offset" → members that handled it
        let config = TestKafka.consumerConfiguration(
            group: group, ["enable.auto.commit": "false", "partition.assignment.strategy": strategy])
        func member(_ name: String) throws -> (KafkaConsumer, RecordCollector) {
            let consumer = try KafkaConsumer(configuration: config, logger: logger)
            try consumer.subscribe([topic])
            let collector = RecordCollector(consumer) { record in
                handled.withLock { $0["\(record.partition)/\(record.offset)", default: []].append(name) }
                // Work; a rebalance may arrive meanwhile. 20 ms a record keeps phase 1 (~6 s for
                // one member) well longer than a join, also when B's start is late on a busy box.
                try? await Task.sleep(for: .milliseconds(20))
                try consumer.store(record.topicPartition, nextOffset: record.offset + 1)
                if record.offset % 10 == 0 { try? await consumer.commit() }
            }
            return (consumer, collector)
        }
        let all = Set((0..<4).map { TopicPartition(topic, Int32($0)) })

        let (a, collectorA) = try member("A")
        try await collectorA.waitFor(count: 30)
        let (b, collectorB) = try member("B")
        try await TestKafka.eventually("A and B to split the partitions") {
            let (pa, pb) = (a.assignment, b.assignment)
            return pa.count == 2 && pb.count == 2 && pa.union(pb) == all
        }
        #expect(handled.withLock { $0.count } < phase1, "the join should happen while phase 1 is handled")
        _ = try await producer.sendAll((0..<phase2).map {
            KafkaOutgoingRecord(topic: topic, key: bytes("k\(phase1 + $0)"), value: bytes("p2-\($0)"))
        })
        try await TestKafka.eventually("both members to handle records") { collectorB.count > 20 }

        // B leaves; A takes everything over.
        await collectorB.stop()
        await b.close()
        try await TestKafka.eventually("A to own all partitions") { a.assignment == all }
        try await TestKafka.eventually("all records to be handled", timeout: .seconds(30)) {
            handled.withLock { $0.count } >= phase1 + phase2
        }
        try await Task.sleep(for: .milliseconds(500))  // late duplicates would show up now
        try await a.commit()

        let duplicates = handled.withLock { $0.filter { $0.value.count > 1 } }
        #expect(duplicates.isEmpty, "handled more than once: \(duplicates.sorted { $0.key < $1.key }.prefix(20))")
        var perKey: [String: Int] = [:]
        for r in collectorA.records + collectorB.records { perKey[text(r.key) ?? "", default: 0] += 1 }
        #expect(perKey.count == phase1 + phase2)
        #expect(perKey.values.allSatisfy { $0 == 1 }, "keys seen more than once: \(perKey.filter { $0.value > 1 }.keys.sorted().prefix(20))")
        #expect(Set(collectorB.records.map(\.topicPartition)).count >= 1)

        // Tansu's ListOffsets(latest) is off for multi-record batches, so the expected committed
        // offsets come from the records themselves.
        var next: [TopicPartition: Int64] = [:]
        for r in collectorA.records + collectorB.records { next[r.topicPartition] = max(next[r.topicPartition] ?? 0, r.offset + 1) }
        #expect(next.values.reduce(0, +) == Int64(phase1 + phase2))
        let committed = try await a.committed(Array(all))
        #expect(committed == next, "committed offsets should follow the last handled record")
        await collectorA.stop()
        await a.close()
        await producer.close()
    }

    /// Records of a paused partition stop arriving (also those already fetched) and arrive, in
    /// order and none missing, after resume; other partitions keep flowing.
    @Test func pausedPartitionDeliversNothingUntilResumed() async throws {
        let topic = TestKafka.uniqueName("t")
        try await TestKafka.createTopic(topic, partitions: 2)
        let (p0, p1) = (TopicPartition(topic, 0), TopicPartition(topic, 1))
        let producer = try KafkaProducer(configuration: TestKafka.configuration(), logger: logger)
        func produce(_ tp: TopicPartition, _ range: Range<Int>) async throws {
            _ = try await producer.sendAll(range.map {
                KafkaOutgoingRecord(topic: topic, partition: tp.partition, key: nil, value: bytes("\(tp.partition)-\($0)"))
            })
        }
        try await produce(p0, 0..<100)  // a backlog, fetched faster than it is handled

        let consumer = try KafkaConsumer(
            configuration: TestKafka.consumerConfiguration(group: TestKafka.uniqueName("g")), logger: logger)
        try consumer.subscribe([topic])
        let collector = RecordCollector(consumer) { _ in try? await Task.sleep(for: .milliseconds(10)) }
        try await collector.waitFor(count: 5)
        try consumer.pause([p0])
        let p0Count = { collector.records.filter { $0.partition == 0 }.count }
        let rightAfterPause = p0Count()

        try await produce(p0, 100..<110)
        try await produce(p1, 0..<10)
        try await TestKafka.eventually("records of the other partition") {
            collector.records.filter { $0.partition == 1 }.count == 10
        }
        // The reader (one record at a time) has gone on to the other partition's records, so the
        // p0 record it may have been handling at pause time is in; nothing else of p0 came since.
        let atPause = p0Count()
        #expect(atPause - rightAfterPause <= 1, "\(atPause - rightAfterPause) records of the paused partition arrived")
        #expect(atPause < 100)
        // A leak would show within this window (the reader is idle, 100+ records wait buffered).
        try await Task.sleep(for: .milliseconds(500))
        #expect(p0Count() == atPause, "records arrived while paused")

        try consumer.resume([p0])
        try await TestKafka.eventually("the paused partition's records after resume") {
            collector.records.filter { $0.partition == 0 }.count >= 110
        }
        try await Task.sleep(for: .milliseconds(200))
        let values = collector.records.filter { $0.partition == 0 }.compactMap { text($0.value) }
        #expect(values == (0..<110).map { "0-\($0)" })
        await collector.stop()
        await consumer.close()
        await producer.close()
    }

    /// close() sends LeaveGroup: the remaining member gets every partition long before the
    /// (deliberately long) session timeout would have expired.
    @Test func closeLeavesTheGroupPromptly() async throws {
        let topic = TestKafka.uniqueName("t")
        let group = TestKafka.uniqueName("g")
        try await TestKafka.createTopic(topic, partitions: 4)
        // A, the member that leaves, has a 30 s session: without LeaveGroup, B waits for it to
        // expire. B joins first: Tansu paces the group by its first member's session (see
        // `takeoverLimit`), whatever A's own session.
        let b = try KafkaConsumer(configuration: Self.firstMemberConfiguration(group), logger: logger)
        try b.subscribe([topic])
        let collectorB = RecordCollector(b)
        let all = Set((0..<4).map { TopicPartition(topic, Int32($0)) })
        try await TestKafka.eventually("B to join") { b.assignment == all }
        let revokedFromA = Mutex<[TopicPartition]>([])
        let a = try KafkaConsumer(
            configuration: TestKafka.consumerConfiguration(group: group, ["session.timeout.ms": "30000"]),
            rebalance: .init(onRevoking: { tps in revokedFromA.withLock { $0 += tps } }), logger: logger)
        try a.subscribe([topic])
        try await TestKafka.eventually("A and B to split the partitions") {
            a.assignment.count == 2 && b.assignment.count == 2
        }

        let ownedByA = a.assignment
        revokedFromA.withLock { $0 = [] }
        let start = ContinuousClock.now
        await a.close()
        #expect(a.assignment.isEmpty)
        #expect(Set(revokedFromA.withLock { $0 }) == ownedByA, "close revokes through onRevoking")
        try await TestKafka.eventually("B to own every partition", timeout: .seconds(25)) { b.assignment == all }
        let elapsed = ContinuousClock.now - start
        #expect(elapsed < Self.takeoverLimit, "takeover took \(elapsed); A's session timeout is 30 s")

        let producer = try KafkaProducer(configuration: TestKafka.configuration(), logger: logger)
        _ = try await producer.sendAll((0..<4).map {
            KafkaOutgoingRecord(topic: topic, partition: Int32($0), key: nil, value: bytes("\($0)"))
        })
        let got = try await collectorB.waitFor(count: 4)
        #expect(Set(got.map(\.partition)) == [0, 1, 2, 3])
        await collectorB.stop()
        await b.close()
        await producer.close()
    }

    /// What the takeover bound protects: the remaining member got the partitions because the
    /// departed one sent LeaveGroup, not because it expired. Tansu paces the group by its first
    /// member's session; with 10 s, measured on the shared 2-core box: takeover after a
    /// LeaveGroup ~5.5 s (one rebalance), after a silent departure (a static member, which sends
    /// no LeaveGroup) ~15.5 s, and never under the 10 s session. 12 s gives a loaded machine
    /// twice the measured takeover and stays below any expiry (with a 5 s session they were
    /// ~3.5 s and ~8 s, too close for a 4 s bound on a loaded machine).
    static let takeoverLimit: Duration = .seconds(12)
    static func firstMemberConfiguration(_ group: String) -> KafkaConfiguration {
        TestKafka.consumerConfiguration(group: group, ["session.timeout.ms": "10000"])
    }

    /// A consumer dropped without close() still leaves the group (and stops its thread).
    @Test func droppedConsumerLeavesTheGroup() async throws {
        let topic = TestKafka.uniqueName("t")
        let group = TestKafka.uniqueName("g")
        try await TestKafka.createTopic(topic, partitions: 2)
        let b = try KafkaConsumer(configuration: Self.firstMemberConfiguration(group), logger: logger)
        try b.subscribe([topic])
        let all = Set((0..<2).map { TopicPartition(topic, Int32($0)) })
        try await TestKafka.eventually("B to join") { b.assignment == all }
        var a: KafkaConsumer? = try KafkaConsumer(
            configuration: TestKafka.consumerConfiguration(group: group, ["session.timeout.ms": "30000"]), logger: logger)
        try a?.subscribe([topic])
        let weakA = WeakBox(a)
        try await TestKafka.eventually("A and B to split the partitions") {
            b.assignment.count == 1 && weakA.value?.assignment.count == 1
        }
        let start = ContinuousClock.now
        a = nil
        #expect(weakA.value == nil, "nothing else keeps the consumer alive")
        try await TestKafka.eventually("B to own every partition", timeout: .seconds(25)) { b.assignment == all }
        let elapsed = ContinuousClock.now - start
        #expect(elapsed < Self.takeoverLimit, "takeover took \(elapsed)")
        await b.close()
    }

    /// A tiny buffer makes fetching pause and resume again and again; nothing is lost, duplicated
    /// or reordered by that. (librdkafka takes up to 1 s to refetch after a resume.)
    @Test func boundedBufferLosesNothing() async throws {
        let topic = TestKafka.uniqueName("t")
        try await TestKafka.createTopic(topic, partitions: 2)
        let producer = try KafkaProducer(configuration: TestKafka.configuration(), logger: logger)
        let n = 100
        _ = try await producer.sendAll((0..<n).map {
            KafkaOutgoingRecord(topic: topic, partition: Int32($0 % 2), key: nil, value: bytes("\($0)"))
        })
        await producer.close()
        let bound = 24
        let (p0, p1) = (TopicPartition(topic, 0), TopicPartition(topic, 1))
        let handedOver = HandedOver()
        let consumer = try KafkaConsumer(
            configuration: TestKafka.configuration(HandedOver.properties),
            options: .init(maxBufferedRecordsPerPartition: bound, onStatistics: handedOver.update), logger: logger)
        try consumer.assign([p0: KafkaOffset.beginning, p1: KafkaOffset.beginning])

        // Nobody reads yet. librdkafka hands records over until a partition's buffer holds `bound`,
        // then fetching pauses there: several statistics later it still has not handed over the
        // rest of the partition (50 records, one fetch's worth), which it would without the pause.
        try await TestKafka.eventually("both buffers full") {
            handedOver[p0] >= Int64(bound) && handedOver[p1] >= Int64(bound)
        }
        try await handedOver.waitForSnapshots(5)
        for tp in [p0, p1] {
            #expect(handedOver[tp] >= Int64(bound) && handedOver[tp] < Int64(n / 2),
                    "\(tp): \(handedOver[tp]) of \(n / 2) records handed over while nobody reads (expected the bound, \(bound))")
        }

        let collector = RecordCollector(consumer) { r in if r.offset % 20 == 0 { try? await Task.sleep(for: .milliseconds(50)) } }
        let got = try await collector.waitFor(count: n)
        // Fetching resumed and reached the end of both partitions; a few statistics later nothing
        // more (no duplicate) has been delivered.
        try await TestKafka.eventually("everything handed over") {
            handedOver[p0] == Int64(n / 2) && handedOver[p1] == Int64(n / 2)
        }
        try await handedOver.waitForSnapshots(3)
        #expect(collector.count == n)
        for p in Int32(0)...1 {
            #expect(got.filter { $0.partition == p }.map(\.offset) == Array(0..<Int64(n / 2)), "partition \(p)")
        }
        await collector.stop()
        await consumer.close()
    }

    private func twoSinglePartitionTopics() async throws -> (String, String) {
        let names = (TestKafka.uniqueName("first"), TestKafka.uniqueName("second"))
        try await TestKafka.createTopic(names.0, partitions: 1)
        try await TestKafka.createTopic(names.1, partitions: 1)
        return names
    }

    /// Records "0", "1", … to partition 0 of `topic`.
    private func sendNumbered(_ count: Int, to topic: String, with producer: KafkaProducer) async throws {
        _ = try await producer.sendAll((0..<count).map { KafkaOutgoingRecord(topic: topic, key: nil, value: bytes("\($0)")) })
    }

    /// A backlog in one partition does not make records of another wait behind all of it: buffered
    /// partitions are served in turn, each in offset order.
    @Test func bufferedPartitionsAreServedInTurn() async throws {
        let (big, small) = try await twoSinglePartitionTopics()
        let producer = try KafkaProducer(configuration: TestKafka.configuration(), logger: logger)
        try await sendNumbered(400, to: big, with: producer)
        let handedOver = HandedOver()
        let consumer = try KafkaConsumer(
            configuration: TestKafka.configuration(HandedOver.properties), options: .init(onStatistics: handedOver.update),
            logger: logger)
        try consumer.assign([TopicPartition(big, 0): KafkaOffset.beginning, TopicPartition(small, 0): KafkaOffset.beginning])
        // The backlog is buffered, nothing read yet.
        try await TestKafka.eventually("the backlog buffered") { handedOver[TopicPartition(big, 0)] == 400 }
        try await sendNumbered(5, to: small, with: producer)
        await producer.close()
        // And now the later records too.
        try await TestKafka.eventually("the later records buffered") { handedOver[TopicPartition(small, 0)] == 5 }
        let collector = RecordCollector(consumer) { _ in }
        let got = try await collector.waitFor(count: 405)
        let lastOfSmall = try #require(got.lastIndex { $0.topic == small })
        #expect(lastOfSmall < 20, "the 5 records of \(small) came at positions up to \(lastOfSmall)")
        #expect(got.filter { $0.topic == big }.map(\.offset) == Array(0..<400))
        #expect(got.filter { $0.topic == small }.map(\.offset) == Array(0..<5))
        await collector.stop()
        await consumer.close()
    }

    /// Re-assigning drops the buffers of partitions no longer assigned, and those partitions are
    /// read again from where the new assignment says when they come back; a partition in both
    /// assignments goes on where it was (no record twice). Each assign comes while the previous
    /// one's fetcher stops may be outstanding (librdkafka #5573 aborted here once).
    @Test func reassigningWithBufferedRecordsDeliversTheNewAssignment() async throws {
        let (a, b) = try await twoSinglePartitionTopics()
        let producer = try KafkaProducer(configuration: TestKafka.configuration(), logger: logger)
        try await sendNumbered(50, to: a, with: producer)
        try await sendNumbered(50, to: b, with: producer)
        let handedOver = HandedOver()
        let consumer = try KafkaConsumer(
            configuration: TestKafka.configuration(HandedOver.properties), options: .init(onStatistics: handedOver.update),
            logger: logger)
        try consumer.assign([TopicPartition(a, 0): KafkaOffset.beginning, TopicPartition(b, 0): KafkaOffset.beginning])
        // Both buffered, nothing read.
        try await TestKafka.eventually("both partitions buffered") {
            handedOver[TopicPartition(a, 0)] == 50 && handedOver[TopicPartition(b, 0)] == 50
        }
        try consumer.assign([TopicPartition(b, 0): KafkaOffset.beginning])
        // `limit` ends each reader without cancelling (which would end the stream for good).
        let gotB = try await RecordCollector(consumer, limit: 50).waitFor(count: 50)
        #expect(gotB.map(\.topic) == Array(repeating: b, count: 50))
        #expect(gotB.map(\.offset) == Array(0..<50))
        _ = try await producer.sendAll([KafkaOutgoingRecord(topic: b, key: nil, value: bytes("50"))])
        let nextB = try await RecordCollector(consumer, limit: 1).waitFor(count: 1)
        #expect(nextB.map(\.offset) == [50])  // not offset 0 again
        await producer.close()
        try consumer.assign([TopicPartition(a, 0): KafkaOffset.beginning])
        let onlyA = RecordCollector(consumer, limit: 50)
        let gotA = try await onlyA.waitFor(count: 50)
        #expect(gotA.map(\.topic) == Array(repeating: a, count: 50))
        #expect(gotA.map(\.offset) == Array(0..<50))
        await consumer.close()
    }

    @Test func concurrentSendsFromManyTasks() async throws {
        let topic = TestKafka.uniqueName("t")
        try await TestKafka.createTopic(topic, partitions: 3)
        let producer = try KafkaProducer(configuration: TestKafka.configuration(), logger: logger)
        let reports = try await withThrowingTaskGroup(of: [DeliveryReport].self) { group in
            for t in 0..<8 {
                group.addTask {
                    var out: [DeliveryReport] = []
                    for i in 0..<50 {
                        out.append(try await producer.send(
                            KafkaOutgoingRecord(topic: topic, key: self.bytes("\(t)-\(i)"), value: self.bytes("\(i)"))))
                    }
                    out += try await producer.sendAll((0..<50).map {
                        KafkaOutgoingRecord(topic: topic, key: self.bytes("b\(t)-\($0)"), value: nil)
                    })
                    return out
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        #expect(reports.count == 800)
        #expect(Set(reports.map { "\($0.partition)/\($0.offset)" }).count == 800)
        await producer.close()
    }

    @Test func assignWithoutGroupReadsAndCloseEndsTheStream() async throws {
        let topic = TestKafka.uniqueName("t")
        try await TestKafka.createTopic(topic, partitions: 2)
        let producer = try KafkaProducer(configuration: TestKafka.configuration(), logger: logger)
        for i in 0..<3 {  // one record per request, so Tansu's high watermark is right
            _ = try await producer.send(KafkaOutgoingRecord(topic: topic, partition: 1, key: nil, value: bytes("\(i)")))
        }
        await producer.close()

        let consumer = try KafkaConsumer(configuration: TestKafka.configuration(), logger: logger)
        #expect(throws: KafkaError.self) { try consumer.subscribe([topic]) }
        try consumer.assign([TopicPartition(topic, 1): 1])
        let wm = try await consumer.watermarks(TopicPartition(topic, 1))
        #expect(wm.low == 0 && wm.high == 3)
        var iterator = consumer.records.makeAsyncIterator()
        #expect(await iterator.next()?.offset == 1)
        #expect(await iterator.next()?.offset == 2)
        let reader = Task { [iterator] in
            var it = iterator
            var n = 0
            while await it.next() != nil { n += 1 }
            return n
        }
        try await Task.sleep(for: .milliseconds(200))
        await consumer.close()
        let n = try await TestKafka.within(.seconds(5), "records to end after close") { await reader.value }
        #expect(n == 0)
        await consumer.close()  // twice is fine
        #expect(throws: KafkaError.self) { try consumer.assign([TopicPartition(topic, 0): 0]) }

        let never = try KafkaConsumer(configuration: TestKafka.configuration(), logger: logger)
        await never.close()
        for await _ in never.records { Issue.record("a never-started consumer delivered a record") }
    }
}

/// What librdkafka has handed over to the consumer's poll thread (into its buffers), per
/// partition: `app_offset` of librdkafka's statistics, the offset after the last record handed over.
private final class HandedOver: Sendable {
    static let properties = ["statistics.interval.ms": "100"]
    private let state = Mutex((snapshots: 0, next: [TopicPartition: Int64]()))

    var update: @Sendable (String) -> Void { { [self] json in parse(json) } }

    subscript(tp: TopicPartition) -> Int64 { state.withLock { $0.next[tp] ?? -1 } }
    var snapshots: Int { state.withLock { $0.snapshots } }

    /// Waits until `count` more statistics have arrived (librdkafka's own clock, not a sleep).
    func waitForSnapshots(_ count: Int) async throws {
        let target = snapshots + count
        try await TestKafka.eventually("\(count) more statistics") { self.snapshots >= target }
    }

    private func parse(_ json: String) {
        guard let root = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
              let topics = root["topics"] as? [String: Any]
        else { return }
        var next: [TopicPartition: Int64] = [:]
        for (topic, value) in topics {
            guard let partitions = (value as? [String: Any])?["partitions"] as? [String: Any] else { continue }
            for (_, p) in partitions {
                guard let p = p as? [String: Any], let partition = (p["partition"] as? NSNumber)?.int32Value,
                      partition >= 0, let offset = (p["app_offset"] as? NSNumber)?.int64Value
                else { continue }
                next[TopicPartition(topic, partition)] = offset
            }
        }
        state.withLock {
            $0.snapshots += 1
            $0.next = next
        }
    }
}

private final class WeakBox<T: AnyObject & Sendable>: Sendable {
    nonisolated(unsafe) weak var value: T?
    init(_ value: T?) { self.value = value }
}

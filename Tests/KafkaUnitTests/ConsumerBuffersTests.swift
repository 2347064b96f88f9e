import Testing

@testable import Kafka

func record(_ tp: TopicPartition, _ offset: Int64) -> KafkaRecord {
    KafkaRecord(topic: tp.topic, partition: tp.partition, offset: offset, key: nil, value: nil)
}

@Suite("KafkaConsumer.Buffers")
struct ConsumerBuffersTests {
    let a = TopicPartition("a", 0)
    let b = TopicPartition("b", 0)
    let c = TopicPartition("c", 0)

    func drain(_ buffers: Ref<KafkaConsumer.Buffers>, skipping: Set<TopicPartition> = []) -> [String] {
        var out: [String] = []
        while let (r, _) = buffers.v.popNext(skipping: skipping) { out.append("\(r.topic)\(r.offset)") }
        return out
    }

    @Test func partitionsTakeTurnsAndEachKeepsOffsetOrder() {
        let buffers = Ref(KafkaConsumer.Buffers())
        for o in Int64(0)..<4 { _ = buffers.v.append(record(a, o)) }  // a's whole backlog arrives first
        for o in Int64(0)..<2 { _ = buffers.v.append(record(b, o)) }
        #expect(buffers.v.count(a) == 4)
        #expect(buffers.v.totalCount == 6)
        #expect(drain(buffers) == ["a0", "b0", "a1", "b1", "a2", "a3"])
        #expect(buffers.v.isEmpty)
    }

    @Test func appendReportsThePartitionsCountAndPopReportsWhatIsLeft() {
        let buffers = Ref(KafkaConsumer.Buffers())
        #expect(buffers.v.append(record(a, 0)) == 1)
        #expect(buffers.v.append(record(a, 1)) == 2)
        #expect(buffers.v.append(record(b, 0)) == 1)
        let first = buffers.v.popNext(skipping: [])
        #expect(first?.record.offset == 0 && first?.left == 1)
        #expect(buffers.v.popNext(skipping: [])?.left == 0)  // b emptied: it leaves the ring
        #expect(buffers.v.partitionsInTurn == [a])
    }

    @Test func skippedPartitionsKeepTheirRecordsAndTheirTurn() {
        let buffers = Ref(KafkaConsumer.Buffers())
        for tp in [a, b, c] { for o in Int64(0)..<2 { _ = buffers.v.append(record(tp, o)) } }
        #expect(drain(buffers, skipping: [b]) == ["a0", "c0", "a1", "c1"])
        #expect(buffers.v.count(b) == 2)
        #expect(drain(buffers) == ["b0", "b1"])
        #expect(buffers.v.popNext(skipping: []) == nil)
    }

    @Test func removingPartitionsKeepsTheTurnOfTheOthers() {
        let buffers = Ref(KafkaConsumer.Buffers())
        for tp in [a, b, c] { for o in Int64(0)..<3 { _ = buffers.v.append(record(tp, o)) } }
        #expect(drain1(buffers) == "a0")
        #expect(drain1(buffers) == "b0")  // c's turn now
        buffers.v.removeAll { $0 == a }
        #expect(buffers.v.partitionsInTurn == [c, b])
        buffers.v.removeAll { $0 == c }  // the one whose turn it was
        #expect(buffers.v.partitionsInTurn == [b])
        #expect(drain(buffers) == ["b1", "b2"])
        buffers.v.removeAll { _ in true }
        #expect(buffers.v.isEmpty)
        #expect(buffers.v.popNext(skipping: []) == nil)
    }

    @Test func removingEverythingBeforeTheTurnWrapsAround() {
        let buffers = Ref(KafkaConsumer.Buffers())
        for tp in [a, b, c] { _ = buffers.v.append(record(tp, 0)); _ = buffers.v.append(record(tp, 1)) }
        #expect([drain1(buffers), drain1(buffers), drain1(buffers), drain1(buffers)] == ["a0", "b0", "c0", "a1"])
        #expect(buffers.v.partitionsInTurn == [b, c])  // a emptied and left; b's turn
        buffers.v.removeAll { $0 != c }
        #expect(buffers.v.partitionsInTurn == [c])
        #expect(drain(buffers) == ["c1"])
    }

    /// Many records through one partition: the queue compacts and still hands out everything in order.
    @Test func aLongQueueStaysInOrderAcrossCompaction() {
        let buffers = Ref(KafkaConsumer.Buffers())
        var expected: [Int64] = []
        var got: [Int64] = []
        var next: Int64 = 0
        for round in 0..<50 {
            for _ in 0..<(round % 7 + 3) {
                _ = buffers.v.append(record(a, next))
                expected.append(next)
                next += 1
            }
            for _ in 0..<(round % 5 + 1) { if let (r, _) = buffers.v.popNext(skipping: []) { got.append(r.offset) } }
        }
        while let (r, _) = buffers.v.popNext(skipping: []) { got.append(r.offset) }
        #expect(got == expected)
    }

    private func drain1(_ buffers: Ref<KafkaConsumer.Buffers>) -> String? {
        buffers.v.popNext(skipping: []).map { "\($0.record.topic)\($0.record.offset)" }
    }
}

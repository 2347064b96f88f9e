import Kafka
import Testing

@testable import OrderCore

/// Everything sent fits the maximum record size: replies, dead-letter copies, and paged lists.
@Suite("Record budget", .timeLimit(.minutes(1)))
struct RecordBudgetTests {
    let topics = Fixture.topics()
    let max = 70_000

    var routing: ReplyRouting { ReplyRouting(topics: topics, maxRecordBytes: max) }

    @Test func theBudgetLeavesRoomForFraming() {
        #expect(routing.recordBudget == max - ReplyRouting.framingBytes)
        #expect(ReplyRouting(topics: topics).maxRecordBytes == 1_048_576, "Apache Kafka's default is the default")
    }

    @Test func anOrdinaryReplyKeepsKeyAndCorrelationHeaders() {
        let r = Fixture.record(headers: [KafkaHeader("correlation-id", "c-1")])
        let reply = routing.reply(to: r, topic: "cart_responses", value: Array("{}".utf8))
        #expect(reply.key == Array("42".utf8))
        #expect(reply.headers.map(\.key) == ["content-type", "correlation-id"])
        #expect(routing.replyValueBudget(for: r) == routing.recordBudget - reply.payloadBytes + 2)
    }

    @Test func oversizedCopiedHeadersAndThenTheKeyAreDroppedSoTheReplyAlwaysHasRoom() {
        let hugeHeader = Fixture.record(headers: [KafkaHeader(key: "correlation-id", value: Array(repeating: 0x61, count: 20_000))])
        let reply = routing.reply(to: hugeHeader, topic: "cart_responses", value: [])
        #expect(reply.headers.map(\.key) == ["content-type"])
        #expect(reply.key == Array("42".utf8))
        #expect(routing.replyValueBudget(for: hugeHeader) >= ReplyRouting.minimumReplyValueBytes)

        let hugeKey = Fixture.record(key: Array(repeating: 0x62, count: 60_000), headers: [KafkaHeader("correlation-id", "c")])
        let keyless = routing.reply(to: hugeKey, topic: "cart_responses", value: [])
        #expect(keyless.key == nil)
        #expect(routing.replyValueBudget(for: hugeKey) >= ReplyRouting.minimumReplyValueBytes)
    }

    @Test func aDeadLetterCopyThatFitsIsUnchanged() {
        let r = Fixture.record(value: Array(repeating: 0x7B, count: 1_000))
        let copy = routing.deadLetter(r, error: "bad")
        #expect(copy.value == r.value)
        #expect(!copy.headers.contains { $0.key == "dlq-value-omitted" })
    }

    @Test func anOversizedDeadLetterCopyLosesItsValueThenItsHeadersThenItsKey() {
        let bigValue = Fixture.record(value: Array(repeating: 0x7B, count: max), headers: [KafkaHeader("h", "v")])
        var copy = routing.deadLetter(bigValue, error: "bad")
        #expect(copy.value == [])
        #expect(copy.headers.first { $0.key == "dlq-value-omitted" }?.stringValue == String(max))
        #expect(copy.headers.contains { $0.key == "h" })
        #expect(copy.payloadBytes <= routing.recordBudget)

        let bigHeaders = Fixture.record(value: Array(repeating: 0x7B, count: max), headers: [KafkaHeader(key: "h", value: Array(repeating: 1, count: max))])
        copy = routing.deadLetter(bigHeaders, error: "bad")
        #expect(!copy.headers.contains { $0.key == "h" })
        #expect(copy.headers.first { $0.key == "dlq-headers-omitted" }?.stringValue == "1")
        #expect(copy.headers.first { $0.key == "dlq-source-offset" } != nil)
        #expect(copy.payloadBytes <= routing.recordBudget)

        let bigKey = Fixture.record(key: Array(repeating: 2, count: max), value: nil)
        copy = routing.deadLetter(bigKey, error: "bad")
        #expect(copy.key == nil)
        #expect(copy.payloadBytes <= routing.recordBudget)
    }

    // MARK: Pages

    @Test func aPageTakesWhatFitsAndSaysMoreFollow() {
        let item = JSON.string(String(repeating: "x", count: 8))  // 10 bytes encoded
        var page = Page(room: 32, limit: 100)
        let added = (0..<4).map { _ in page.add(item) }  // 10, 21 (with the comma), 32, then no room
        #expect(added == [true, true, true, false])
        #expect(page.items.count == 3)
        #expect(page.more)
        #expect(JSON.array(page.items).bytes.count == 32 + 2, "the room counts commas; the brackets are the envelope's")
    }

    @Test func aPageStopsAtItsLimit() {
        var page = Page(room: 1_000, limit: 2)
        let added = [page.add(1), page.add(2), page.add(3)]
        #expect(added == [true, true, false])
        #expect(page.wanted == 0)
        #expect(page.items == [1, 2])
    }

    @Test func anEmptyPageHasNoMoreUntilSomethingDoesNotFit() {
        var page = Page(room: 0, limit: 5)
        #expect(!page.more)
        let added = page.add("a")
        #expect(!added)
        #expect(page.more && page.items.isEmpty)
    }
}

import Kafka
import Testing

@testable import OrderCore

/// Everything sent fits the maximum record size: replies, dead-letter copies, and paged lists.
@Suite("Record budget", .timeLimit(.minutes(1)))
struct RecordBudgetTests {
    let topics = Fixture.topics()
    let max = ReplyRouting.minimumMaxRecordBytes

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
        let hugeHeader = Fixture.record(headers: [KafkaHeader(key: "correlation-id", value: Array(repeating: 0x61, count: 200_000))])
        let reply = routing.reply(to: hugeHeader, topic: "cart_responses", value: [])
        #expect(reply.headers.map(\.key) == ["content-type"])
        #expect(reply.key == Array("42".utf8))
        #expect(routing.replyValueBudget(for: hugeHeader) >= ReplyRouting.minimumReplyValueBytes)

        let hugeKey = Fixture.record(key: Array(repeating: 0x62, count: 200_000), headers: [KafkaHeader("correlation-id", "c")])
        let keyless = routing.reply(to: hugeKey, topic: "cart_responses", value: [])
        #expect(keyless.key == nil)
        #expect(routing.replyValueBudget(for: hugeKey) >= ReplyRouting.minimumReplyValueBytes)
    }

    @Test func theLargestCartAndOrderRepliesFitTheValueFloor() throws {
        // 100 lines, names of 512 bytes that all escape six to one, the largest ids and prices.
        let name = String(repeating: "\u{1}", count: Product.maxNameBytes)
        let price = try #require(Money("9999999999.99"))
        let requestId = String(repeating: "\u{2}", count: Limits.maxRequestIdLength)
        let lines = 0..<Int64(Limits.maxCartLines)
        let cart = try Cart(
            cartId: .max, userId: .max, createdAt: "2026-12-04T01:02:03.456Z",
            items: lines.map { try CartItem(cartItemId: .max - $0, productId: .max - $0, productName: name, unitPrice: price, quantity: 1) })
        let order = Order(
            orderId: .max, userId: .max, status: .confirmed, totalPrice: cart.totalPrice, createdAt: "2026-12-04T01:02:03.456Z",
            items: try lines.map { try OrderItem(orderItemId: .max - $0, productId: .max - $0, productName: name, unitPrice: price, quantity: 1) })
        let cartReply = RequestOutcome.ok(requestId: requestId, action: "remove_item", body: [("cart", cart.json)]).reply
        let orderReply = RequestOutcome.ok(requestId: requestId, action: "create_order", body: [("order", order.json)]).reply
        #expect(cartReply.count > 300_000 && orderReply.count > 300_000, "the worst case is what it claims to be")
        #expect(cartReply.count <= ReplyRouting.minimumReplyValueBytes)
        #expect(orderReply.count <= ReplyRouting.minimumReplyValueBytes)
        // The smallest allowed record size leaves the floor and room for a key and the copied headers.
        let least = ReplyRouting(topics: topics, maxRecordBytes: ReplyRouting.minimumMaxRecordBytes)
        let r = Fixture.record(headers: [KafkaHeader("correlation-id", String(repeating: "c", count: 36)), KafkaHeader("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")])
        #expect(least.reply(to: r, topic: "cart_responses", value: orderReply).headers.count == 3)
    }

    @Test func manyTinyHeadersWeighTheirFramingAndOnlyTheLastOfEachNameIsCopied() {
        let many = Fixture.record(headers: (0..<60_000).map { _ in KafkaHeader("correlation-id", "c") } + [KafkaHeader("correlation-id", "last")])
        let reply = routing.reply(to: many, topic: "cart_responses", value: [])
        #expect(reply.headers.map(\.key) == ["content-type", "correlation-id"])
        #expect(reply.headers.last?.stringValue == "last")
        // Empty headers are not free: 60,000 of them are over half a megabyte in a record.
        let empty = Fixture.record(headers: (0..<60_000).map { _ in KafkaHeader(key: "", value: nil) })
        #expect(empty.payloadBytes >= 600_000)
        #expect(routing.deadLetter(empty, error: "bad").payloadBytes <= routing.recordBudget)
    }

    @Test func aStoredReplySentAgainToARepeatWithLargerHeadersStillFits() {
        let value = [UInt8](repeating: 0x20, count: routing.recordBudget - 1_000)
        let repeatWithBigHeaders = Fixture.record(headers: [KafkaHeader("correlation-id", String(repeating: "c", count: 50_000))])
        let reply = routing.reply(to: repeatWithBigHeaders, topic: "cart_responses", value: value)
        #expect(reply.payloadBytes <= routing.recordBudget)
        #expect(reply.headers.map(\.key) == ["content-type"])
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

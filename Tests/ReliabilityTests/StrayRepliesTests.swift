import Foundation
import Kafka
import OrderCore
import Testing
import TestSupport

/// Other instances' replies, stray and late upstream answers share the reply topics. A flood of
/// them must cost neither memory nor correctness: they are dropped (most before being parsed),
/// and the waiting requests stay bounded.
@Suite("Stray upstream replies", .serialized, .timeLimit(.minutes(10)))
struct StrayRepliesTests {
    @Test("a flood of stray upstream replies: memory stays flat, requests are still answered")
    func strayReplyFlood() async throws {
        try await withSystem("strays") { system in
            let service = try #require(system.process("order-service"))
            let product = TestCatalog.uniqueProductId()
            try await TestCatalog.add(product, price: "3.00")
            let user = TestCatalog.uniqueUserId()
            #expect(try await system.request("cart_requests", add(user, product, 1, id: "before"))["status"]?.string == "ok")
            let rssBefore = try rssMegabytes(service.pid)

            // 10,000 × scale stray answers: unknown correlation ids in the header, in the body only,
            // none at all, plus big ones (512 KB) and non-JSON.
            let big = Array(#"{"request_id":"nobody","products":[{"product_id":1,"name":""#.utf8)
                + Array(repeating: UInt8(ascii: "x"), count: 512 * 1024) + Array(#"","price":"1.00"}]}"#.utf8)
            var sent = 0
            var batch: [KafkaOutgoingRecord] = []
            for i in 0..<(10_000 * scale) {
                let topic = i % 2 == 0 ? "product_details" : "inventory_check_results"
                let value: [UInt8]
                var headers: [KafkaHeader] = []
                switch i % 5 {
                case 0: value = Array(#"{"request_id":"stray-\#(i)","products":[]}"#.utf8); headers = [KafkaHeader("correlation-id", "stray-\(i)")]
                case 1: value = Array(#"{"request_id":"stray-\#(i)","items":[]}"#.utf8)
                case 2: value = Array("not json \(i)".utf8); headers = [KafkaHeader("correlation-id", "x-\(i)")]
                case 3: value = i % 1_000 == 3 ? big : Array("{}".utf8)
                default: value = Array(#"{"products":[{"product_id":\#(i),"name":"n","price":"1"}]}"#.utf8); headers = [KafkaHeader(key: "correlation-id", value: nil)]
                }
                batch.append(KafkaOutgoingRecord(topic: system.topics.name(topic), key: Array("k\(i % 64)".utf8), value: value, headers: headers))
                if batch.count == 1_000 {
                    _ = try await system.producer.sendAll(batch)
                    sent += batch.count
                    batch = []
                }
            }
            _ = try await system.producer.sendAll(batch)
            sent += batch.count
            // Meanwhile and afterwards, ordinary requests are answered.
            for round in 0..<20 {
                let r = try await system.request("cart_requests", add(user, product, 1, id: "after-\(round)"))
                #expect(r["status"]?.string == "ok", "\(r.text)")
            }
            let r = try await system.request("order_requests", ["action": "create_order", "user_id": .int(user)])
            #expect(r["status"]?.string == "ok", "\(r.text)")
            #expect(service.isRunning)
            let rssAfter = try rssMegabytes(service.pid)
            // Generous: the reply consumer's fetch buffers hold some of the big strays for a while.
            #expect(rssAfter - rssBefore < 80, "RSS grew from \(rssBefore) MB to \(rssAfter) MB after \(sent) stray replies")
        }
    }
}

import Foundation
import Kafka
import OrderCore
import Testing
import TestSupport

/// End to end over Kafka: the real executables, the local broker and PostgreSQL.
@Suite("End to end", .serialized, .timeLimit(.minutes(5)))
struct EndToEndTests {
    @Test("get_cart of a new user with kcat-like headers answers an empty cart on cart_responses")
    func getCartNewUser() async throws {
        try await withSystem("getcart") { system in
            let user = TestCatalog.uniqueUserId()
            let value = Array(#"{"request_id":"r-1","action":"get_cart","user_id":\#(user)}"#.utf8)
            let record = try await system.requestRecord(
                "cart_requests", value: value, key: String(user), headers: [KafkaHeader("correlation-id", "kcat-1")])
            #expect(record.topic == system.topics.name("cart_responses"))
            #expect(record.key == Array(String(user).utf8))
            #expect(record.header("content-type")?.stringValue == "application/json")
            #expect(record.header("correlation-id")?.stringValue == "kcat-1")
            let reply = try JSON.parse(record.value!)
            expectOK(reply, "get_cart")
            #expect(reply["request_id"]?.string == "r-1")
            #expect(reply["cart"]?["cart_id"]?.isNull == true)
            #expect(reply["cart"]?["user_id"]?.int == user)
            #expect(reply["cart"]?["items"]?.array?.isEmpty == true)
            #expect(reply["cart"]?["total_price"]?.string == "0.00")
        }
    }

    @Test("cart actions: add, merge with refresh, update, remove, limits, errors")
    func cartActions() async throws {
        try await withSystem("cart") { system in
            let user = TestCatalog.uniqueUserId()
            let mug = TestCatalog.uniqueProductId()
            let pot = TestCatalog.uniqueProductId()
            try await TestCatalog.add(mug, name: "Mug", price: "19.99")
            try await TestCatalog.add(pot, name: "Teapot", price: "5.10")

            var r = try await system.request("cart_requests", add(user, mug, 2))
            expectOK(r, "add_item")
            #expect(r["cart"]?["total_price"]?.string == "39.98")
            #expect(r["cart"]?["items"]?.array?.first?["line_total"]?.string == "39.98")
            #expect(r["cart"]?["cart_id"]?.int != nil)
            #expect(r["cart"]?["created_at"]?.string?.hasSuffix("Z") == true)

            // Same product again: quantities add up; name and price are refreshed.
            try await TestCatalog.add(mug, name: "Big Mug", price: "20.00")
            r = try await system.request("cart_requests", add(user, mug, 3))
            #expect(cartLines(r).map(\.quantity) == [5])
            #expect(r["cart"]?["items"]?.array?.first?["product_name"]?.string == "Big Mug")
            #expect(r["cart"]?["total_price"]?.string == "100.00")

            r = try await system.request("cart_requests", add(user, pot, 1))
            #expect(cartLines(r).map(\.product) == [mug, pot])  // by cart_item_id ascending
            #expect(r["cart"]?["total_price"]?.string == "105.10")

            r = try await system.request("cart_requests", ["action": "update_item", "user_id": .int(user), "product_id": .int(pot), "quantity": 4])
            expectOK(r, "update_item")
            #expect(cartLines(r).map(\.quantity) == [5, 4])
            r = try await system.request("cart_requests", ["action": "update_item", "user_id": .int(user), "product_id": .int(pot), "quantity": 0])
            #expect(cartLines(r).map(\.product) == [mug])

            r = try await system.request("cart_requests", ["action": "update_item", "user_id": .int(user), "product_id": .int(pot), "quantity": 1])
            expectError(r, "item_not_found")
            r = try await system.request("cart_requests", ["action": "remove_item", "user_id": .int(user), "product_id": .int(pot)])
            expectError(r, "item_not_found")
            r = try await system.request("cart_requests", ["action": "remove_item", "user_id": .int(user), "product_id": .int(mug)])
            expectOK(r, "remove_item")
            #expect(cartLines(r).isEmpty)
            #expect(r["cart"]?["total_price"]?.string == "0.00")

            // Unknown product: product_not_found with the ids, nothing changed.
            let ghost = TestCatalog.uniqueProductId()
            r = try await system.request("cart_requests", add(user, ghost, 1))
            expectError(r, "product_not_found")
            #expect(r["error"]?["product_ids"]?.array?.compactMap(\.int) == [ghost])

            // Quantity limits.
            r = try await system.request("cart_requests", add(user, mug, 10_000))
            expectOK(r, "add_item")
            r = try await system.request("cart_requests", add(user, mug, 1))
            expectError(r, "invalid_request")
            r = try await system.request("cart_requests", add(user, mug, 10_001))
            expectError(r, "invalid_request")
            r = try await system.request("cart_requests", ["action": "get_cart", "user_id": .int(user)])
            #expect(cartLines(r).map(\.quantity) == [10_000])
        }
    }

    @Test("a cart holds at most 100 lines: the 101st is cart_full")
    func cartFull() async throws {
        try await withSystem("cartfull") { system in
            let user = TestCatalog.uniqueUserId()
            let base = TestCatalog.uniqueProductId()
            for i in 0..<101 { try await TestCatalog.add(base + Int64(i), price: "1.00") }
            for i in 0..<100 {
                let r = try await system.request("cart_requests", add(user, base + Int64(i), 1))
                expectOK(r, "add_item")
            }
            let r = try await system.request("cart_requests", add(user, base + 100, 1))
            expectError(r, "cart_full")
            let cart = try await system.request("cart_requests", ["action": "get_cart", "user_id": .int(user)])
            #expect(cartLines(cart).count == 100)
            #expect(cart["cart"]?["total_price"]?.string == "100.00")
        }
    }
}

import Foundation
import Kafka
import OrderCore
import Testing
import TestSupport

/// The most bytes a reply value may have (the default ORDER_SERVICE_MAX_RECORD_BYTES).
private let recordLimit = 1_048_576

/// A product name of exactly `Product.maxNameBytes` bytes, distinct per `n`.
private func longName(_ n: Int) -> String {
    let head = "product \(n) "
    return head + String(repeating: "x", count: Product.maxNameBytes - head.utf8.count)
}

/// Products with the longest names the service takes, in the reference catalog.
private func longNamedProducts(_ count: Int, price: String = "1.00") async throws -> [Int64] {
    var ids: [Int64] = []
    for n in 0..<count {
        let id = TestCatalog.uniqueProductId()
        try await TestCatalog.add(id, name: longName(n), price: price, stock: 100_000)
        ids.append(id)
    }
    return ids
}

/// Sends all requests at once (each keyed by its user_id, with its own correlation id) and
/// returns the replies in request order.
private func requestAll(_ system: TestSystem, _ logical: String, _ bodies: [JSON], timeout: Duration = .seconds(120)) async throws -> [JSON] {
    let ids = bodies.map { _ in UUID().uuidString }
    try await withThrowingTaskGroup(of: Void.self) { group in
        for (body, id) in zip(bodies, ids) {
            group.addTask {
                try await system.send(
                    logical, value: body.bytes, key: body["user_id"]?.int.map { String($0) }, headers: [KafkaHeader("correlation-id", id)])
            }
        }
        try await group.waitForAll()
    }
    let replyTopic = logical == "order_requests" ? "order_responses" : logical == "admin_requests" ? "admin_responses" : "cart_responses"
    let wanted = Set(ids)
    var found: [String: JSON] = [:]
    let deadline = ContinuousClock.now + timeout
    while found.count < wanted.count {
        for r in system.records(on: replyTopic) {
            guard let c = r.header("correlation-id")?.stringValue, wanted.contains(c), found[c] == nil else { continue }
            found[c] = (try? JSON.parse(r.value ?? [])) ?? .null
        }
        if found.count == wanted.count { break }
        guard ContinuousClock.now < deadline else {
            throw TestSystemError("\(wanted.count - found.count) of \(wanted.count) requests on \(logical) unanswered after \(timeout)")
        }
        try await Task.sleep(for: .milliseconds(100))
    }
    return ids.map { found[$0] ?? .null }
}

/// Sends a request and returns the reply with its value's size.
private func sizedRequest(_ system: TestSystem, _ logical: String, _ body: JSON) async throws -> (reply: JSON, bytes: Int) {
    let record = try await system.requestRecord(logical, value: body.bytes, key: body["user_id"]?.int.map { String($0) }, timeout: .seconds(40))
    let value = try #require(record.value)
    return (try JSON.parse(value), value.count)
}

extension EndToEndTests {
    @Test("list_carts pages by size: every page fits in a record; next_after_cart_id reaches each cart exactly once")
    func listCartsPaging() async throws {
        try await withSystem("pagecarts") { system in
            let products = try await longNamedProducts(100)
            // 60 carts of 25 long lines and 4 full carts (100 lines): well above 1 MB of carts.
            let users = (0..<64).map { _ in TestCatalog.uniqueUserId() }
            var lines: [Int64: Int] = [:]
            var adds: [JSON] = []
            for (n, user) in users.enumerated() {
                lines[user] = n < 4 ? 100 : 25
                for p in products.prefix(n < 4 ? 100 : 25) { adds.append(add(user, p, 2)) }
            }
            let replies = try await requestAll(system, "cart_requests", adds)
            let failed = replies.filter { $0["status"]?.string != "ok" }
            #expect(failed.isEmpty, "\(failed.count) add_item failed, e.g. \(failed.first?.text.prefix(300) ?? "")")
            var cartIds: [Int64: Int64] = [:]
            for r in replies {
                if let user = r["cart"]?["user_id"]?.int, let cart = r["cart"]?["cart_id"]?.int { cartIds[user] = cart }
            }
            #expect(cartIds.count == users.count)
            let mine = Set(users)
            let ours = Set(cartIds.values)
            // Carts are listed by cart_id: start just below this test's first cart.
            let start = (cartIds.values.min() ?? 1) - 1

            var after = start
            var seen: [Int64: Int] = [:]  // user → times listed
            var pages = 0
            var ourBytes = 0
            var ourPages = 0
            paging: while true {
                pages += 1
                guard pages <= 500 else {
                    Issue.record("list_carts did not end after 500 pages")
                    break
                }
                let (page, bytes) = try await sizedRequest(
                    system, "admin_requests", ["action": "list_carts", "limit": 1_000, "after_cart_id": .int(after)])
                expectOK(page, "list_carts")
                #expect(bytes <= recordLimit, "page \(pages) has \(bytes) bytes")
                let carts = page["carts"]?.array ?? []
                let ids = carts.compactMap { $0["cart_id"]?.int }
                #expect(ids.count == carts.count)
                #expect(ids == ids.sorted() && Set(ids).count == ids.count, "page \(pages) is not by cart_id ascending")
                #expect(ids.allSatisfy { $0 > after }, "page \(pages) has carts at or below after_cart_id \(after)")
                if ids.contains(where: { ours.contains($0) }) { ourPages += 1 }
                for cart in carts {
                    guard let user = cart["user_id"]?.int, mine.contains(user) else { continue }
                    seen[user, default: 0] += 1
                    ourBytes += cart.bytes.count
                    #expect(cart["cart_id"]?.int == cartIds[user])
                    #expect(cart["items"]?.array?.count == lines[user], "cart of \(user)")
                    #expect(cart["items"]?.array?.allSatisfy { $0["product_name"]?.string?.utf8.count == Product.maxNameBytes } == true)
                    expectConsistentAmounts(cart, "listed cart of \(user)")
                }
                switch page["next_after_cart_id"] {
                case .int(let next)?:
                    #expect(!carts.isEmpty, "an empty page with next_after_cart_id")
                    #expect(next == ids.last, "next_after_cart_id \(next) is not the page's last cart \(ids.last ?? -1)")
                    guard next > after else {
                        Issue.record("next_after_cart_id \(next) does not advance past \(after)")
                        break paging
                    }
                    after = next
                case .null?: break paging
                default:
                    Issue.record("next_after_cart_id missing or not an integer: \(page.text.prefix(300))")
                    break paging
                }
            }
            let twice = seen.filter { $0.value != 1 }
            #expect(seen.count == users.count, "\(users.count - seen.count) of this test's carts were never listed")
            #expect(twice.isEmpty, "carts listed more than once: \(twice.prefix(5))")
            #expect(ourBytes > recordLimit, "this test's carts total only \(ourBytes) bytes")
            #expect(ourPages >= 2, "this test's carts came on \(ourPages) page(s)")

            // limit caps the page; out-of-range paging fields are refused.
            let (small, _) = try await sizedRequest(system, "admin_requests", ["action": "list_carts", "limit": 3, "after_cart_id": .int(start)])
            expectOK(small, "list_carts")
            let smallIds = small["carts"]?.array?.compactMap { $0["cart_id"]?.int } ?? []
            #expect(smallIds.count == 3)
            #expect(small["next_after_cart_id"]?.int == smallIds.last)
            for bad: JSON in [
                ["action": "list_carts", "limit": 0], ["action": "list_carts", "limit": 1_001], ["action": "list_carts", "after_cart_id": -1],
            ] {
                expectError(try await system.request("admin_requests", bad), "invalid_request")
            }
        }
    }

    @Test("list_orders pages by size: newest first, every page fits in a record; before_order_id reaches each order exactly once; limit")
    func listOrdersPaging() async throws {
        // One user's add_items run one at a time: let them use remembered product details
        // (create_order still asks the Product Service).
        try await withSystem("pageorders", environment: ["ORDER_SERVICE_PRODUCT_CACHE_MS": "600000"]) { system in
            let products = try await longNamedProducts(40)
            let user = TestCatalog.uniqueUserId()
            var orderIds: [Int64] = []
            var orderBytes = 0
            // Orders of 40 long lines (~25 KB each) until they pass 1 MB together.
            while orderBytes <= recordLimit + 100_000 && orderIds.count < 100 {
                let replies = try await requestAll(system, "cart_requests", products.map { add(user, $0, 1) })
                let failed = replies.filter { $0["status"]?.string != "ok" }
                try #require(failed.isEmpty, "add_item failed: \(failed.first?.text.prefix(300) ?? "")")
                let r = try await system.request("order_requests", ["action": "create_order", "user_id": .int(user)], timeout: .seconds(40))
                expectOK(r, "create_order")
                let order = try #require(r["order"])
                orderIds.append(try #require(order["order_id"]?.int))
                #expect(order["items"]?.array?.count == products.count)
                orderBytes += order.bytes.count
            }
            #expect(orderBytes > recordLimit)
            let newestFirst = orderIds.sorted(by: >)
            #expect(orderIds.sorted() == orderIds, "order ids do not grow")

            func listOrders(_ extra: [(String, JSON)]) async throws -> (reply: JSON, bytes: Int, ids: [Int64]) {
                let (reply, bytes) = try await sizedRequest(
                    system, "order_requests", .object([("action", "list_orders"), ("user_id", .int(user))] + extra))
                expectOK(reply, "list_orders")
                #expect(bytes <= recordLimit, "a list_orders page of \(bytes) bytes")
                let orders = reply["orders"]?.array ?? []
                for o in orders {
                    #expect(o["user_id"]?.int == user)
                    expectConsistentAmounts(o, "listed order \(o["order_id"]?.int ?? -1)")
                }
                return (reply, bytes, orders.compactMap { $0["order_id"]?.int })
            }

            // Without paging fields: the newest orders that fit, and where to go on.
            let first = try await listOrders([])
            #expect(first.ids == Array(newestFirst.prefix(first.ids.count)), "not newest first: \(first.ids.prefix(5))")
            #expect(first.ids.count < orderIds.count, "all \(orderIds.count) orders (\(orderBytes) bytes) in one page of \(first.bytes) bytes")
            #expect(first.reply["next_before_order_id"]?.int == first.ids.last)

            // Following before_order_id reaches every order once, newest first.
            var all = first.ids
            var cursor = first.reply["next_before_order_id"]?.int
            var pages = 1
            while let before = cursor, pages < 100 {
                pages += 1
                let page = try await listOrders([("before_order_id", .int(before))])
                #expect(page.ids.allSatisfy { $0 < before })
                all += page.ids
                switch page.reply["next_before_order_id"] {
                case .int(let next)?:
                    #expect(next == page.ids.last)
                    cursor = next
                case .null?: cursor = nil
                default:
                    Issue.record("next_before_order_id missing: \(page.reply.text.prefix(300))")
                    cursor = nil
                }
            }
            #expect(all == newestFirst, "paging gave \(all.count) orders, \(Set(all).count) distinct, of \(orderIds.count)")
            #expect(pages >= 2)

            // limit.
            var page = try await listOrders([("limit", 5)])
            #expect(page.ids == Array(newestFirst.prefix(5)))
            #expect(page.reply["next_before_order_id"]?.int == newestFirst[4])
            page = try await listOrders([("limit", 1), ("before_order_id", .int(newestFirst[0]))])
            #expect(page.ids == [newestFirst[1]])
            #expect(page.reply["next_before_order_id"]?.int == newestFirst[1])
            page = try await listOrders([("limit", 1_000)])
            #expect(page.ids == first.ids, "limit 1000 should give the page that fits")
            #expect(page.reply["next_before_order_id"]?.int == first.ids.last)
            page = try await listOrders([("limit", 3), ("before_order_id", .int(newestFirst[newestFirst.count - 2]))])
            #expect(page.ids == [newestFirst[newestFirst.count - 1]])
            #expect(page.reply["next_before_order_id"]?.isNull == true)
            page = try await listOrders([("before_order_id", .int(newestFirst[newestFirst.count - 1]))])
            #expect(page.ids.isEmpty)
            #expect(page.reply["next_before_order_id"]?.isNull == true)
            for bad: [(String, JSON)] in [[("limit", 0)], [("limit", 1_001)], [("before_order_id", 0)], [("before_order_id", -5)], [("limit", "5")]] {
                let r = try await system.request("order_requests", .object([("action", "list_orders"), ("user_id", .int(user))] + bad))
                expectError(r, "invalid_request")
            }
        }
    }
}

import Foundation
import Testing

@testable import OrderCore

/// Product and Inventory answers are checked once, where they enter (ProductLookup(reply:asked:)
/// and KafkaInventoryChecker.stock(reply:asked:)): what breaks the contract is an unusable
/// product or an unusable answer, never a value the rest of the code cannot handle.
@Suite("Upstream answers at the boundary", .timeLimit(.minutes(1)))
struct UpstreamAnswerTests {
    func products(_ entries: [JSON], asked: [Int64]) throws(UpstreamFailure) -> ProductLookup {
        try ProductLookup(reply: .object([("products", .array(entries))]), asked: asked)
    }

    func entry(_ id: Int64 = 1, name: JSON = "Mug", price: JSON = "1.00") -> JSON {
        .object([("product_id", .int(id)), ("name", name), ("price", price)])
    }

    @Test(arguments: [
        ("", "empty name"), ("Mug\u{0}", "name contains NUL"), ("\u{0}", "name contains NUL"),
        (String(repeating: "x", count: 513), "name longer than 512 bytes"),
        (String(repeating: "x", count: 1_000_000), "name longer than 512 bytes"),
    ])
    func unusableNamesMakeTheProductNotFound(_ name: String, _ why: String) throws {
        let l = try products([entry(name: .string(name)), entry(2)], asked: [1, 2])
        #expect(l.notFound == [1])
        #expect(l.unusable == [1: why])
        #expect(Set(l.products.keys) == [2])
    }

    @Test(arguments: [
        JSON.string("1000000000000"), .string("1000000000000.00"), .int(1_000_000_000_000), .number("1000000000000.5"),
        .number("1e30"), .int(.max), .int(.min), .string("-0.01"), .number("0.001"), .string("999999999999.999"),
    ])
    func pricesOutsideTheBoundMakeTheProductNotFound(_ price: JSON) throws {
        let l = try products([entry(price: price)], asked: [1])
        #expect(l.notFound == [1])
        #expect(l.unusable[1] != nil)
    }

    @Test(arguments: [
        (JSON.string("999999999999.99"), "999999999999.99"), (.int(999_999_999_999), "999999999999.00"),
        (.number("999999999999.99"), "999999999999.99"), (.string("0"), "0.00"), (.int(0), "0.00"), (.number("0.5"), "0.50"),
    ])
    func pricesUpToTheBoundAndZeroAreUsable(_ price: JSON, _ expected: String) throws {
        let l = try products([entry(price: price)], asked: [1])
        #expect(l.products[1]?.price.description == expected)
        #expect(l.unusable.isEmpty)
    }

    @Test func conflictingDuplicateEntriesMakeTheProductUnusableAndAgreeingOnesDoNot() throws {
        let conflicting = try products([entry(price: "1.00"), entry(price: "2.00"), entry(2), entry(2)], asked: [1, 2])
        #expect(conflicting.notFound == [1])
        #expect(conflicting.unusable[1] == "two different entries")
        #expect(conflicting.products[2]?.price.description == "1.00")
        // A broken entry is not repaired by a later good one.
        let brokenFirst = try products([entry(price: "-1"), entry(price: "1.00")], asked: [1])
        #expect(brokenFirst.notFound == [1])
    }

    @Test func entriesForProductsNotAskedForAreIgnored() throws {
        let l = try products([entry(99, name: "", price: "x"), entry(1), entry(-5), entry(0)], asked: [1])
        #expect(Set(l.products.keys) == [1])
        #expect(l.unusable.isEmpty, "nothing is said about products that were not asked for")
    }

    @Test func extraFieldsAreIgnored() throws {
        let e = JSON.object([("product_id", 1), ("name", "Mug"), ("price", "2.00"), ("colour", "red"), ("price_cents", 200)])
        #expect(try products([e], asked: [1]).products[1]?.price.description == "2.00")
    }

    // MARK: Availability

    func stock(_ items: JSON, asked: [(productId: Int64, quantity: Int)] = [(1, 2), (2, 3)]) throws(UpstreamFailure) -> [StockLine] {
        try KafkaInventoryChecker.stock(reply: .object([("items", items)]), asked: asked)
    }

    @Test func wellFormedAvailabilityIsComparedWithOurQuantities() throws {
        let lines = try stock([
            .object([("product_id", 1), ("requested", 999), ("available", 5)]), .object([("product_id", 2), ("available", .int(.max))]),
        ])
        #expect(lines == [StockLine(productId: 1, requested: 2, available: 5), StockLine(productId: 2, requested: 3, available: .max)])
    }

    @Test func unmentionedProductsHaveNothingAvailable() throws {
        #expect(try stock([.object([("product_id", 1), ("available", 5)])]).last == StockLine(productId: 2, requested: 3, available: 0))
        #expect(try stock([]).map(\.available) == [0, 0])
    }

    @Test(arguments: [
        JSON.object([("product_id", 1), ("available", -1)]), .object([("product_id", 1), ("available", .number("2.0"))]),
        .object([("product_id", 1), ("available", "5")]), .object([("product_id", 1)]), .object([("product_id", 1), ("available", .null)]),
        .object([("product_id", 1), ("available", .number("1e30"))]), .object([("product_id", 1), ("available", true)]),
    ])
    func aBrokenEntryOfAnAskedProductMakesTheWholeAnswerUnusable(_ item: JSON) {
        #expect(throws: UpstreamFailure.self) { try stock([item, .object([("product_id", 2), ("available", 9)])]) }
    }

    @Test func conflictingDuplicatesMakeTheAnswerUnusable() throws {
        #expect(throws: UpstreamFailure.self) {
            try stock([.object([("product_id", 1), ("available", 5)]), .object([("product_id", 1), ("available", 0)])])
        }
        #expect(try stock([.object([("product_id", 1), ("available", 5)]), .object([("product_id", 1), ("available", 5)])]).first?.available == 5)
    }

    @Test func entriesOfOtherProductsAndNonObjectsAreIgnored() throws {
        let lines = try stock([.object([("product_id", 99), ("available", -7)]), "junk", 5, .object([("product_id", "1"), ("available", -1)])])
        #expect(lines.map(\.available) == [0, 0])
    }

    @Test(arguments: [#"{}"#, #"{"items":null}"#, #"{"items":{}}"#, "[]", #"{"Items":[]}"#])
    func anAnswerWithoutAnItemsArrayIsABadReply(_ text: String) throws {
        let reply = try JSON.parse(text)
        #expect(throws: UpstreamFailure.self) { try KafkaInventoryChecker.stock(reply: reply, asked: [(1, 1)]) }
    }
}

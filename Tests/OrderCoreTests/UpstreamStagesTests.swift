import Foundation
import Testing

@testable import OrderCore

struct FakeCatalog: ProductCatalog {
    var result: Result<ProductLookup, UpstreamFailure>
    let asked = Log<[Int64]>()
    func lookup(_ productIds: [Int64]) async throws(UpstreamFailure) -> ProductLookup {
        asked.append(productIds)
        return try result.get()
    }
}

struct FakeInventory: InventoryChecker {
    var result: Result<[StockLine], UpstreamFailure>
    func check(_ lines: [(productId: Int64, quantity: Int)]) async throws(UpstreamFailure) -> [StockLine] {
        try result.get()
    }
}

@Suite("ProductLookup(reply:asked:)", .timeLimit(.minutes(1)))
struct ProductLookupParsingTests {
    func lookup(_ reply: String, asked: [Int64]) throws(UpstreamFailure) -> ProductLookup {
        try ProductLookup(reply: JSON.literal(reply), asked: asked)
    }

    @Test func wellFormedReply() throws {
        let l = try lookup(
            #"{"request_id":"x","products":[{"product_id":1,"name":"Tea","price":"2.50"},{"product_id":2,"name":"Mug","price":"10"}]}"#,
            asked: [1, 2])
        #expect(l.notFound.isEmpty)
        #expect(l.products == [
            1: Product(productId: 1, name: "Tea", price: Money(cents: 250)!)!,
            2: Product(productId: 2, name: "Mug", price: Money(cents: 1000)!)!,
        ])
    }

    @Test func numericPricesAreAccepted() throws {
        let l = try lookup(
            #"{"products":[{"product_id":1,"name":"a","price":3},{"product_id":2,"name":"b","price":4.25},{"product_id":3,"name":"c","price":0}]}"#,
            asked: [1, 2, 3])
        #expect(l.notFound.isEmpty)
        #expect(l.products[1]?.price == Money(cents: 300))
        #expect(l.products[2]?.price == Money(cents: 425))
        #expect(l.products[3]?.price == Money.zero)
    }

    @Test func idsTheReplyDoesNotMentionAreNotFoundInAskedOrderWithoutRepeats() throws {
        let l = try lookup(#"{"products":[{"product_id":2,"name":"b","price":"1.00"}]}"#, asked: [9, 2, 7, 9, 3])
        #expect(l.notFound == [9, 7, 3])
        #expect(Set(l.products.keys) == [2])
        #expect(try lookup(#"{"products":[]}"#, asked: [1]).notFound == [1])
        #expect(try lookup(#"{"products":[]}"#, asked: []) == ProductLookup(products: [:], notFound: []))
    }

    @Test(arguments: [
        #"{"product_id":1,"price":"1.00"}"#,  // no name
        #"{"product_id":1,"name":null,"price":"1.00"}"#,
        #"{"product_id":1,"name":5,"price":"1.00"}"#,
        #"{"product_id":1,"name":"a"}"#,  // no price
        #"{"product_id":1,"name":"a","price":null}"#,
        #"{"product_id":1,"name":"a","price":"1.005"}"#,
        #"{"product_id":1,"name":"a","price":"-1.00"}"#,
        #"{"product_id":1,"name":"a","price":-1}"#,
        #"{"product_id":1,"name":"a","price":-0.5}"#,
        #"{"product_id":1,"name":"a","price":1e3}"#,
        #"{"product_id":1,"name":"a","price":"1e3"}"#,
        #"{"product_id":1,"name":"a","price":"free"}"#,
        #"{"product_id":1,"name":"a","price":""}"#,
        #"{"product_id":1,"name":"a","price":true}"#,
        #"{"product_id":1,"name":"a","price":{"amount":"1.00"}}"#,
        #"{"product_id":"1","name":"a","price":"1.00"}"#,
        #"{"product_id":1.0,"name":"a","price":"1.00"}"#,
        #"{"name":"a","price":"1.00"}"#,
        #""product 1""#,
        "1",
        "null",
        "[1]",
    ])
    func malformedEntriesCountAsNotFound(_ entry: String) throws {
        let l = try lookup(#"{"products":[\#(entry),{"product_id":2,"name":"ok","price":"1.00"}]}"#, asked: [1, 2])
        #expect(l.notFound == [1])
        #expect(Set(l.products.keys) == [2])
    }

    @Test func hugeIntegerPricesCountAsNotFoundInsteadOfCrashing() throws {
        // 10^17 units do not fit in Int64 cents; the reply breaks the contract (prices are
        // strings) and must not be trusted, let alone crash the service.
        let reply = JSON.object([
            ("products", .array([
                .object([("product_id", 1), ("name", "x"), ("price", .int(100_000_000_000_000_000))]),
                .object([("product_id", 2), ("name", "y"), ("price", "999999999999999.99")]),
            ])),
        ])
        let lookup = try ProductLookup(reply: reply, asked: [1, 2])
        #expect(lookup.notFound == [1, 2])
    }

    @Test(arguments: [#"{}"#, #"{"products":null}"#, #"{"products":{"1":{}}}"#, #"{"products":"[]"}"#, "[]", "null", #"{"Products":[]}"#])
    func aReplyWithoutAProductsArrayIsABadReply(_ reply: String) {
        #expect(throws: UpstreamFailure.badReply(service: "product", reason: "products is missing or not an array")) {
            try lookup(reply, asked: [1])
        }
    }
}

@Suite("ProductLookupStage and InventoryCheckStage", .timeLimit(.minutes(1)))
struct UpstreamStagesTests {
    let tea = Product(productId: 1, name: "Tea", price: Money(cents: 250)!)!

    @Test func productsAreReturnedWhenAllAreKnown() async throws {
        let catalog = FakeCatalog(result: .success(ProductLookup(products: [1: tea], notFound: [])))
        let result = await ProductLookupStage(catalog: catalog).run([1])
        #expect(try result.get() == [1: tea])
        #expect(catalog.asked.all == [[1]])
    }

    @Test func unknownProductsGiveProductNotFoundWithSortedIds() async {
        let catalog = FakeCatalog(result: .success(ProductLookup(products: [1: tea], notFound: [30, 4, 12])))
        let result = await ProductLookupStage(catalog: catalog).run([1, 30, 4, 12])
        guard case .failure(let error) = result else { Issue.record("expected a failure"); return }
        #expect(error.code == .productNotFound)
        #expect(JSON.object(error.details) == JSON.object([("product_ids", [4, 12, 30])]))
        #expect(error.message.contains("4, 12, 30"))
        #expect(error.json.text.contains(#""product_ids":[4,12,30]"#))
    }

    @Test(arguments: [
        UpstreamFailure.timeout(service: "product"), .unavailable(service: "product", reason: "broker down"),
        .badReply(service: "product", reason: "products is missing or not an array"),
    ])
    func upstreamFailuresBecomeUpstreamTimeout(_ failure: UpstreamFailure) async {
        let result = await ProductLookupStage(catalog: FakeCatalog(result: .failure(failure))).run([1])
        guard case .failure(let error) = result else { Issue.record("expected a failure"); return }
        #expect(error.code == .upstreamTimeout)
        #expect(error.details.isEmpty)
        #expect(!error.message.contains("broker down"))  // internal details stay internal
        let inv = await InventoryCheckStage(inventory: FakeInventory(result: .failure(failure))).run([(1, 1)])
        guard case .failure(let invError) = inv else { Issue.record("expected a failure"); return }
        #expect(invError.code == .upstreamTimeout)
    }

    @Test func enoughStockPasses() async {
        let answer = [StockLine(productId: 1, requested: 5, available: 5), StockLine(productId: 2, requested: 1, available: 100)]
        let result = await InventoryCheckStage(inventory: FakeInventory(result: .success(answer))).run([(1, 5), (2, 1)])
        #expect((try? result.get()) != nil)
        let none = await InventoryCheckStage(inventory: FakeInventory(result: .success([]))).run([])
        #expect((try? none.get()) != nil)
    }

    @Test func insufficientStockListsOnlyTheShortLines() async {
        let answer = [
            StockLine(productId: 1, requested: 5, available: 5), StockLine(productId: 2, requested: 3, available: 2),
            StockLine(productId: 3, requested: 1, available: 100), StockLine(productId: 4, requested: 7, available: 0),
        ]
        let result = await InventoryCheckStage(inventory: FakeInventory(result: .success(answer))).run([(1, 5), (2, 3), (3, 1), (4, 7)])
        guard case .failure(let error) = result else { Issue.record("expected a failure"); return }
        #expect(error.code == .insufficientStock)
        #expect(JSON.object(error.details).text
            == #"{"items":[{"product_id":2,"requested":3,"available":2},{"product_id":4,"requested":7,"available":0}]}"#)
    }
}

import Testing

@testable import OrderCore

@Suite("Money", .timeLimit(.minutes(1)))
struct MoneyTests {
    @Test(arguments: [
        ("19.99", 1999, "19.99"), ("19.9", 1990, "19.90"), ("19", 1900, "19.00"), ("0", 0, "0.00"),
        ("0.05", 5, "0.05"), ("0.5", 50, "0.50"), ("0.10", 10, "0.10"), ("007.01", 701, "7.01"),
        ("999999999999.99", 99_999_999_999_999, "999999999999.99"),
    ] as [(String, Int64, String)])
    func parsesAndFormats(_ text: String, _ cents: Int64, _ formatted: String) throws {
        let m = try #require(Money(text))
        #expect(m.cents == cents)
        #expect(m.description == formatted)
        #expect(m.json == .string(formatted))
        #expect(Money(m.description) == m)
    }

    @Test(arguments: [
        "1.234", "1e3", "1E3", " 1", "1 ", "", "-", "+1", ".5", "1.", "-.5", "1.2.3", "1,00", "abc", "--1", "- 1",
        "0x10", "١", "１", "1.٥", "NaN", "1.-5", "1.+5", "\u{0}1",
        // Negative amounts and amounts beyond Money.max (13 or more integer digits).
        "-1.50", "-0.05", "-0", "1000000000000", "1000000000000.00", "999999999999999.99", "99999999999999999999",
    ])
    func rejectsMalformedAndOutOfRangeAmounts(_ text: String) {
        #expect(Money(text) == nil)
    }

    @Test func centsOutsideTheBoundAreRefused() {
        #expect(Money(cents: -1) == nil)
        #expect(Money(cents: .min) == nil)
        #expect(Money(cents: Money.max.cents + 1) == nil)
        #expect(Money(cents: .max) == nil)
        #expect(Money(cents: Money.max.cents) == Money.max)
        #expect(Money(units: 999_999_999_999) != nil)
        #expect(Money(units: 1_000_000_000_000) == nil)
        #expect(Money(units: .max) == nil, "units × 100 overflows Int64: refused, not trapped")
        #expect(Money(units: -1) == nil)
    }

    @Test func additionIsExactAndBounded() throws {
        let a = try #require(Money("0.10"))
        let b = try #require(Money("0.20"))
        #expect(a.adding(b) == Money("0.30"))
        #expect(Money.max.adding(.zero) == Money.max)
        #expect(Money.max.adding(try #require(Money(cents: 1))) == nil)
        #expect(Money.sum([a, b, a]) == Money("0.40"))
        #expect(Money.sum([Money.max, Money.max]) == nil)
        #expect(Money.sum([Money]()) == .zero)
    }

    @Test func multiplicationByQuantityIsBounded() throws {
        let price = try #require(Money("19.99"))
        #expect(price.times(3)?.description == "59.97")
        #expect(price.times(0) == .zero)
        #expect(price.times(10_000)?.description == "199900.00")
        #expect(price.times(-1) == nil)
        #expect(Money.max.times(2) == nil)
        #expect(Money.max.times(.max) == nil, "Int64 overflow is reported, not trapped")
        #expect(try #require(Money("99999999.99")).times(10_000) == Money("999999999900.00"))
    }

    /// Property: for random amounts and quantities, checked arithmetic agrees with exact
    /// (wide) arithmetic, and returns nil exactly when the exact result passes the bound.
    @Test func checkedArithmeticAgreesWithExactArithmetic() throws {
        var rng = SystemRandomNumberGenerator()
        let bound = Int(Money.max.cents)
        for _ in 0..<10_000 {
            let a = try #require(Money(cents: Int64.random(in: 0...Money.max.cents, using: &rng)))
            let b = try #require(Money(cents: Int64.random(in: 0...Money.max.cents / Int64.random(in: 1...1_000_000, using: &rng), using: &rng)))
            let q = Int.random(in: 0...Limits.maxQuantity, using: &rng)
            let sum = Int(a.cents) + Int(b.cents)
            #expect(a.adding(b)?.cents == (sum <= bound ? Int64(sum) : nil))
            let (product, overflow) = Int(b.cents).multipliedReportingOverflow(by: q)
            #expect(b.times(q)?.cents == (!overflow && product <= bound ? Int64(product) : nil))
            #expect(Money(a.description) == a, "formatting round-trips")
        }
    }

    @Test func formatting() throws {
        #expect(try #require(Money(cents: 1)).description == "0.01")
        #expect(try #require(Money(cents: 10)).description == "0.10")
        #expect(try #require(Money(cents: 100)).description == "1.00")
        #expect(try #require(Money(cents: 123_456)).description == "1234.56")
        #expect(Money.max.description == "999999999999.99")
        #expect(Money.zero.description == "0.00")
    }

    @Test func ordering() throws {
        #expect(try #require(Money("1.99")) < (try #require(Money("2"))))
        let sorted = try ["3", "1.5", "2.25"].map { try #require(Money($0)) }.sorted()
        #expect(sorted.map(\.description) == ["1.50", "2.25", "3.00"])
    }

    @Test func cartTotalsSumLineTotals() throws {
        let cart = try Cart(cartId: 1, userId: 2, createdAt: nil, items: [
            try CartItem(cartItemId: 1, productId: 10, productName: "a", unitPrice: try #require(Money("0.10")), quantity: 3),
            try CartItem(cartItemId: 2, productId: 11, productName: "b", unitPrice: try #require(Money("0.20")), quantity: 1),
            try CartItem(cartItemId: 3, productId: 12, productName: "c", unitPrice: try #require(Money("19.99")), quantity: 2),
        ])
        #expect(cart.items.map(\.lineTotal.description) == ["0.30", "0.20", "39.98"])
        #expect(cart.totalPrice.description == "40.48")
    }

    /// The overflow that once killed the process: ten lines at the largest price, 10,000 each.
    @Test func linesAndCartsBeyondTheBoundCannotBeBuilt() throws {
        #expect(throws: MoneyOutOfRange.self) {
            try CartItem(cartItemId: 1, productId: 1, productName: "x", unitPrice: Money.max, quantity: 10_000)
        }
        #expect(throws: MoneyOutOfRange.self) {
            try OrderItem(orderItemId: 1, productId: 1, productName: "x", unitPrice: Money.max, quantity: 2)
        }
        let half = try #require(Money(cents: Money.max.cents / 2 + 1))
        let items = try (1...2).map { try CartItem(cartItemId: $0, productId: $0, productName: "x", unitPrice: half, quantity: 1) }
        #expect(throws: MoneyOutOfRange.self) { try Cart(cartId: 1, userId: 1, createdAt: nil, items: items) }
        #expect(try Cart(cartId: 1, userId: 1, createdAt: nil, items: [items[0]]).totalPrice == half)
    }
}

@Suite("Product (checked upstream details)", .timeLimit(.minutes(1)))
struct ProductTests {
    @Test(arguments: [
        ("", "empty name"), (String(repeating: "a", count: Product.maxNameBytes + 1), "name longer than 512 bytes"),
        ("Mug\u{0}", "name contains NUL"), (String(repeating: "é", count: Product.maxNameBytes / 2 + 1), "name longer than 512 bytes"),
    ])
    func unusableNames(_ name: String, _ why: String) {
        #expect(Product.nameProblem(name) == why)
        #expect(Product(productId: 1, name: name, price: .zero) == nil)
    }

    @Test(arguments: ["Mug", String(repeating: "a", count: Product.maxNameBytes), "Tea \"green\" ☕️", "tab\there", "\u{1F}"])
    func usableNames(_ name: String) {
        #expect(Product.nameProblem(name) == nil)
        #expect(Product(productId: 1, name: name, price: .zero)?.name == name)
    }

    @Test func idsBelowOneAreRefused() {
        #expect(Product(productId: 0, name: "a", price: .zero) == nil)
        #expect(Product(productId: -5, name: "a", price: .zero) == nil)
        #expect(Product(productId: .max, name: "a", price: Money.max)?.price == Money.max)
    }
}

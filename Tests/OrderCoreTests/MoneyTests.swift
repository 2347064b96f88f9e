import Testing

@testable import OrderCore

@Suite("Money")
struct MoneyTests {
    @Test(arguments: [
        ("19.99", 1999, "19.99"), ("19.9", 1990, "19.90"), ("19", 1900, "19.00"), ("0", 0, "0.00"),
        ("0.05", 5, "0.05"), ("0.5", 50, "0.50"), ("0.10", 10, "0.10"), ("007.01", 701, "7.01"),
        ("-1.50", -150, "-1.50"), ("-0.05", -5, "-0.05"), ("-0", 0, "0.00"),
        ("999999999999999.99", 99_999_999_999_999_999, "999999999999999.99"),
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
        "0x10", "١", "１", "1.٥", "NaN", "1000000000000000", "1.-5", "1.+5", "\u{0}1",
    ])
    func rejectsMalformedAmounts(_ text: String) {
        #expect(Money(text) == nil)
    }

    @Test func additionIsExact() throws {
        let a = try #require(Money("0.10"))
        let b = try #require(Money("0.20"))
        #expect((a + b).description == "0.30")
        #expect(a + b == Money("0.30"))
        #expect((Money("0.01")! + Money("0.99")!).description == "1.00")
    }

    @Test func multiplicationByQuantity() throws {
        let price = try #require(Money("19.99"))
        #expect((price * 3).description == "59.97")
        #expect((price * 0).description == "0.00")
        #expect((price * 10_000).description == "199900.00")
        #expect((Money("0.01")! * 7).cents == 7)
    }

    @Test func formattingSmallAndNegativeValues() {
        #expect(Money(cents: 1).description == "0.01")
        #expect(Money(cents: 10).description == "0.10")
        #expect(Money(cents: 100).description == "1.00")
        #expect(Money(cents: -1).description == "-0.01")
        #expect(Money(cents: -123_456).description == "-1234.56")
        #expect(Money(cents: .min).description == "-92233720368547758.08")
        #expect(Money.zero.description == "0.00")
    }

    @Test func ordering() {
        #expect(Money("1.99")! < Money("2")!)
        #expect(Money("-1")! < Money("0")!)
        #expect([Money("3")!, Money("1.5")!, Money("2.25")!].sorted().map(\.description) == ["1.50", "2.25", "3.00"])
    }

    @Test func cartTotalsSumLineTotals() {
        let cart = Cart(cartId: 1, userId: 2, createdAt: nil, items: [
            CartItem(cartItemId: 1, productId: 10, productName: "a", unitPrice: Money("0.10")!, quantity: 3),
            CartItem(cartItemId: 2, productId: 11, productName: "b", unitPrice: Money("0.20")!, quantity: 1),
            CartItem(cartItemId: 3, productId: 12, productName: "c", unitPrice: Money("19.99")!, quantity: 2),
        ])
        #expect(cart.items.map(\.lineTotal.description) == ["0.30", "0.20", "39.98"])
        #expect(cart.totalPrice.description == "40.48")
    }
}

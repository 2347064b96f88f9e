/// An amount of money the service can store, compute with and send: an exact count of cents
/// between 0 and `Money.max` (999,999,999,999.99). Every unit price, line total, cart total and
/// order total is a `Money`, so none of them can pass the bound; the schema's `NUMERIC(14,2)`
/// columns hold exactly this range. On the wire it is a string with exactly two decimals.
///
/// Arithmetic never traps: `adding` and `times` return nil when the result would pass the bound
/// (callers turn that into a client error), and the bound leaves Int64 ample room.
public struct Money: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let cents: Int64

    /// The largest amount: 999,999,999,999.99 (12 integer digits, like `NUMERIC(14,2)`).
    public static let max = Money(unchecked: 99_999_999_999_999)
    public static let zero = Money(unchecked: 0)
    static let maxIntegerDigits = 12

    private init(unchecked cents: Int64) { self.cents = cents }

    /// nil when `cents` is negative or above `Money.max`.
    public init?(cents: Int64) {
        guard cents >= 0, cents <= Self.max.cents else { return nil }
        self.cents = cents
    }

    /// Parses "19.99", "19.9", "19": at most 12 integer digits and two decimals; no sign, exponent
    /// or spaces. Read byte by byte (this runs for every price of every cart line read back).
    public init?(_ text: String) {
        var bytes = text.utf8.makeIterator()
        var next = bytes.next()
        guard let (units, _) = Self.digits(&next, &bytes, atMost: Self.maxIntegerDigits) else { return nil }
        var fraction: Int64 = 0
        if next == UInt8(ascii: ".") {
            next = bytes.next()
            guard let (value, count) = Self.digits(&next, &bytes, atMost: 2) else { return nil }
            fraction = count == 1 ? value * 10 : value
        }
        guard next == nil else { return nil }
        // 12 digits × 100 + 99 cannot overflow Int64, and cannot pass the bound.
        self.init(unchecked: units * 100 + fraction)
    }

    /// Whole units (a JSON integer price); nil when negative or above the bound.
    public init?(units: Int64) {
        let (cents, overflow) = units.multipliedReportingOverflow(by: 100)
        guard !overflow else { return nil }
        self.init(cents: cents)
    }

    /// Reads 1…`atMost` ASCII digits starting at `next`; nil when there are none or too many.
    private static func digits(
        _ next: inout UInt8?, _ bytes: inout String.UTF8View.Iterator, atMost limit: Int
    ) -> (value: Int64, count: Int)? {
        var value: Int64 = 0
        var count = 0
        while let b = next, b >= 0x30, b <= 0x39 {
            count += 1
            guard count <= limit else { return nil }
            value = value * 10 + Int64(b - 0x30)
            next = bytes.next()
        }
        return count > 0 ? (value, count) : nil
    }

    public var description: String {
        let frac = cents % 100
        return "\(cents / 100).\(frac < 10 ? "0" : "")\(frac)"
    }

    public var json: JSON { .string(description) }

    /// The sum, or nil when it would pass `Money.max`.
    public func adding(_ other: Money) -> Money? {
        let (sum, overflow) = cents.addingReportingOverflow(other.cents)
        return overflow ? nil : Money(cents: sum)
    }

    /// The amount times a quantity, or nil when the quantity is negative or the product would
    /// pass `Money.max`.
    public func times(_ quantity: Int) -> Money? {
        guard quantity >= 0 else { return nil }
        let (product, overflow) = cents.multipliedReportingOverflow(by: Int64(clamping: quantity))
        return overflow ? nil : Money(cents: product)
    }

    /// The sum of all amounts, or nil when it would pass `Money.max`.
    public static func sum<S: Sequence<Money>>(_ amounts: S) -> Money? {
        var total = Money.zero
        for a in amounts {
            guard let t = total.adding(a) else { return nil }
            total = t
        }
        return total
    }

    public static func < (a: Money, b: Money) -> Bool { a.cents < b.cents }
}

/// An amount that would pass `Money.max` (a line, cart or order total).
public struct MoneyOutOfRange: Error, Sendable, Equatable, CustomStringConvertible {
    public init() {}
    public var description: String { "an amount would exceed \(Money.max)" }
}

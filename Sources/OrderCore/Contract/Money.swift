/// Money as an exact count of cents. On the wire it is a string with exactly two decimals.
public struct Money: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var cents: Int64

    public init(cents: Int64) { self.cents = cents }

    public static let zero = Money(cents: 0)
    /// The largest unit price accepted from the Product Service: 999,999,999,999.99.
    public static let maxPrice = Money(cents: 99_999_999_999_999)

    /// Parses "19.99", "19.9", "19" (and "-1.50"); at most two decimals, no exponent, no spaces.
    /// At most 15 integer digits. Read byte by byte (this runs for every price of every cart line read from the database).
    public init?(_ text: String) {
        var bytes = text.utf8.makeIterator()
        var next = bytes.next()
        let negative = next == UInt8(ascii: "-")
        if negative { next = bytes.next() }
        guard let (units, _) = Self.digits(&next, &bytes, atMost: 15) else { return nil }
        var fraction: Int64 = 0
        if next == UInt8(ascii: ".") {
            next = bytes.next()
            guard let (value, count) = Self.digits(&next, &bytes, atMost: 2) else { return nil }
            fraction = count == 1 ? value * 10 : value
        }
        guard next == nil else { return nil }
        let c = units * 100 + fraction
        cents = negative ? -c : c
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
        let sign = cents < 0 ? "-" : ""
        let a = cents.magnitude
        let frac = a % 100
        return "\(sign)\(a / 100).\(frac < 10 ? "0" : "")\(frac)"
    }

    public var json: JSON { .string(description) }

    public static func + (a: Money, b: Money) -> Money { Money(cents: a.cents + b.cents) }
    public static func * (a: Money, q: Int) -> Money { Money(cents: a.cents * Int64(q)) }
    public static func < (a: Money, b: Money) -> Bool { a.cents < b.cents }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}

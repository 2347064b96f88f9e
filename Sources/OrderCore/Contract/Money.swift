/// Money as an exact count of cents. On the wire it is a string with exactly two decimals.
public struct Money: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var cents: Int64

    public init(cents: Int64) { self.cents = cents }

    public static let zero = Money(cents: 0)
    /// The largest unit price accepted from the Product Service: 999,999,999,999.99.
    public static let maxPrice = Money(cents: 99_999_999_999_999)

    /// Parses "19.99", "19.9", "19" (and "-1.50"); at most two decimals, no exponent, no spaces.
    public init?(_ text: String) {
        var s = Substring(text)
        var negative = false
        if s.first == "-" { negative = true; s = s.dropFirst() }
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count <= 2, let whole = parts.first, !whole.isEmpty, whole.count <= 15,
            whole.allSatisfy(\.isASCIIDigit), let units = Int64(whole)
        else { return nil }
        var fraction: Int64 = 0
        if parts.count == 2 {
            let f = parts[1]
            guard !f.isEmpty, f.count <= 2, f.allSatisfy(\.isASCIIDigit), let v = Int64(f) else { return nil }
            fraction = f.count == 1 ? v * 10 : v
        }
        let c = units * 100 + fraction
        cents = negative ? -c : c
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

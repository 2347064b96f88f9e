import Foundation

/// One text-format result cell, as handed to `PostgresDecodable` conformances.
public struct PostgresCell: Sendable {
    public let column: String
    /// The server's text representation; nil for SQL NULL.
    public let text: String?

    public init(column: String, text: String?) {
        self.column = column
        self.text = text
    }

    /// The text, or a decode error for NULL (a non-optional type was requested).
    public func requireText(as type: Any.Type) throws -> String {
        guard let text else {
            throw PostgresError.decode("column \"\(column)\" is NULL; decode it as \(type)? instead")
        }
        return text
    }

    public func failure(_ type: Any.Type, reason: String? = nil) -> PostgresError {
        // The value itself is left out: cells may hold personal data and errors end up in logs.
        var message = "column \"\(column)\" cannot be decoded as \(type)"
        if let reason { message += ": \(reason)" }
        return PostgresError.decode(message)
    }
}

/// A Swift type that can be built from a text-format result cell.
public protocol PostgresDecodable {
    init(postgresCell cell: PostgresCell) throws
}

extension String: PostgresDecodable {
    public init(postgresCell cell: PostgresCell) throws {
        self = try cell.requireText(as: String.self)
    }
}

extension PostgresDecodable where Self: FixedWidthInteger {
    public init(postgresCell cell: PostgresCell) throws {
        guard let value = Self(try cell.requireText(as: Self.self)) else { throw cell.failure(Self.self) }
        self = value
    }
}

extension Int: PostgresDecodable {}
extension Int16: PostgresDecodable {}
extension Int32: PostgresDecodable {}
extension Int64: PostgresDecodable {}

extension Bool: PostgresDecodable {
    public init(postgresCell cell: PostgresCell) throws {
        switch try cell.requireText(as: Bool.self) {
        case "t", "true": self = true
        case "f", "false": self = false
        default: throw cell.failure(Bool.self)
        }
    }
}

extension Double: PostgresDecodable {
    public init(postgresCell cell: PostgresCell) throws {
        let text = try cell.requireText(as: Double.self)
        switch text {
        case "Infinity": self = .infinity
        case "-Infinity": self = -.infinity
        case "NaN": self = .nan
        default:
            guard let value = Double(text) else { throw cell.failure(Double.self) }
            self = value
        }
    }
}

extension Decimal: PostgresDecodable {
    private static let posix = Locale(identifier: "en_US_POSIX")

    /// Exact: rejects values Foundation's Decimal cannot hold without rounding (more than 38 significant
    /// digits) and ±Infinity, instead of silently changing money amounts.
    public init(postgresCell cell: PostgresCell) throws {
        let text = try cell.requireText(as: Decimal.self)
        if text == "NaN" {
            self = .nan
            return
        }
        guard let digits = Self.significantDigits(text) else {
            throw cell.failure(Decimal.self, reason: "not a finite plain decimal number")
        }
        guard digits <= 38 else {
            throw cell.failure(Decimal.self, reason: "\(digits) significant digits exceed Decimal's 38")
        }
        guard let value = Decimal(string: text, locale: Self.posix), !value.isNaN else {
            throw cell.failure(Decimal.self, reason: "out of Decimal's range")
        }
        self = value
    }

    /// Significant digits of `[+-]digits[.digits]`, or nil if `text` has any other shape.
    private static func significantDigits(_ text: String) -> Int? {
        var bytes = Substring(text).utf8[...]
        if let first = bytes.first, first == UInt8(ascii: "-") || first == UInt8(ascii: "+") {
            bytes = bytes.dropFirst()
        }
        let isDigit = { (b: UInt8) in b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") }
        var intPart = bytes
        var fracPart = bytes[bytes.endIndex...]
        if let dot = bytes.firstIndex(of: UInt8(ascii: ".")) {
            intPart = bytes[..<dot]
            fracPart = bytes[bytes.index(after: dot)...]
        }
        guard !intPart.isEmpty || !fracPart.isEmpty, intPart.allSatisfy(isDigit), fracPart.allSatisfy(isDigit)
        else { return nil }
        // Leading and trailing zeros are exponent, not mantissa (Decimal is mantissa × 10^exponent).
        let all = Array(intPart) + Array(fracPart)
        guard let first = all.firstIndex(where: { $0 != UInt8(ascii: "0") }),
            let last = all.lastIndex(where: { $0 != UInt8(ascii: "0") })
        else { return 0 }
        return last - first + 1
    }
}

extension UUID: PostgresDecodable {
    public init(postgresCell cell: PostgresCell) throws {
        guard let value = UUID(uuidString: try cell.requireText(as: UUID.self)) else {
            throw cell.failure(UUID.self)
        }
        self = value
    }
}

extension Date: PostgresDecodable {
    /// Expects `DateStyle ISO` output, which every connection sets up (`2024-05-01 12:00:00.123456+00`).
    public init(postgresCell cell: PostgresCell) throws {
        let text = try cell.requireText(as: Date.self)
        guard let value = PostgresTimestamp.parse(text) else {
            throw cell.failure(Date.self, reason: "expected an ISO timestamp (infinity and BC are not supported)")
        }
        self = value
    }
}

extension Array: PostgresDecodable where Element == UInt8 {
    /// `bytea` in hex output format (`\x0aff…`), which every connection sets up.
    public init(postgresCell cell: PostgresCell) throws {
        var text = try cell.requireText(as: [UInt8].self)
        // Over the contiguous UTF-8 (outbox records and stored replies are decoded here on the
        // hot path); a String's index-by-index view was most of this function's time.
        let decoded: [UInt8]? = text.withUTF8 { hex in
            guard hex.count % 2 == 0, hex.count >= 2, hex[0] == UInt8(ascii: "\\"), hex[1] == UInt8(ascii: "x") else { return nil }
            return [UInt8](unsafeUninitializedCapacity: hex.count / 2 - 1) { out, initialized in
                var i = 2
                while i < hex.count {
                    guard let h = Self.nibble(hex[i]), let l = Self.nibble(hex[i + 1]) else { return }
                    out[initialized] = h << 4 | l
                    initialized += 1
                    i += 2
                }
            }
        }
        guard let decoded else { throw cell.failure([UInt8].self, reason: "expected bytea hex format") }
        guard decoded.count == text.utf8.count / 2 - 1 else { throw cell.failure([UInt8].self, reason: "invalid hex digit") }
        self = decoded
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

extension Optional: PostgresDecodable where Wrapped: PostgresDecodable {
    public init(postgresCell cell: PostgresCell) throws {
        self = cell.text == nil ? .none : .some(try Wrapped(postgresCell: cell))
    }
}

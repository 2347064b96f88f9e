import Foundation

/// How one query parameter travels to the server.
public enum PostgresParameter: Sendable, Hashable {
    case null
    /// Text format with the type left for the server to infer (`$1::numeric` etc. when ambiguous).
    case text(String)
    /// Binary-format `bytea` (OID 17): arbitrary bytes, NUL included, no escaping.
    case bytea([UInt8])
    /// Binary-format `bytea[]` (OID 1001), one dimension; nil is SQL NULL. Each element is copied
    /// once into the message as it is: no hex digits to write here or to parse in the server.
    case byteaArray([[UInt8]?])
}

/// A Swift value that can be bound to a `$n` placeholder.
public protocol PostgresBindable: Sendable {
    var postgresParameter: PostgresParameter { get }
}

extension PostgresParameter: PostgresBindable {
    public var postgresParameter: PostgresParameter { self }
}

extension String: PostgresBindable {
    public var postgresParameter: PostgresParameter { .text(self) }
}

extension Substring: PostgresBindable {
    public var postgresParameter: PostgresParameter { .text(String(self)) }
}

extension Int: PostgresBindable {
    public var postgresParameter: PostgresParameter { .text(String(self)) }
}

extension Int16: PostgresBindable {
    public var postgresParameter: PostgresParameter { .text(String(self)) }
}

extension Int32: PostgresBindable {
    public var postgresParameter: PostgresParameter { .text(String(self)) }
}

extension Int64: PostgresBindable {
    public var postgresParameter: PostgresParameter { .text(String(self)) }
}

extension Bool: PostgresBindable {
    public var postgresParameter: PostgresParameter { .text(self ? "true" : "false") }
}

extension Double: PostgresBindable {
    /// Swift's `description` is the shortest text that round-trips exactly; PostgreSQL parses it as such.
    public var postgresParameter: PostgresParameter {
        if isNaN { return .text("NaN") }
        if isInfinite { return .text(self < 0 ? "-Infinity" : "Infinity") }
        return .text(description)
    }
}

extension Decimal: PostgresBindable {
    /// `Decimal.description` is locale-independent ('.' separator, no grouping) and exact.
    public var postgresParameter: PostgresParameter { .text(isNaN ? "NaN" : description) }
}

extension UUID: PostgresBindable {
    public var postgresParameter: PostgresParameter { .text(uuidString) }
}

extension Date: PostgresBindable {
    /// RFC 3339 in UTC with microseconds (PostgreSQL's resolution), e.g. `2024-05-01T12:00:00.123456Z`.
    public var postgresParameter: PostgresParameter { .text(PostgresTimestamp.format(self)) }
}

extension Array: PostgresBindable where Element == UInt8 {
    public var postgresParameter: PostgresParameter { .bytea(self) }
}

extension Optional: PostgresBindable where Wrapped: PostgresBindable {
    public var postgresParameter: PostgresParameter {
        switch self {
        case .none: .null
        case .some(let value): value.postgresParameter
        }
    }
}

/// A one-dimensional array parameter in PostgreSQL's text format (`{"a","b",NULL}`), for
/// `$n::text[]`, `$n::bigint[]`, `$n::numeric[]` and the like: a whole batch travels as one bound
/// parameter, so the statement text — and its prepared plan — stays the same for any batch size.
public struct PostgresArrayLiteral: PostgresBindable, Sendable, Hashable {
    public let text: String

    /// Every element is quoted and escaped, so any text (commas, quotes, backslashes, braces,
    /// the word NULL) round-trips; nil is SQL NULL. Text may not contain NUL (PostgreSQL's rule).
    public init(_ elements: [String?]) {
        // Built as bytes: batches are large and this runs on the hot path.
        var out: [UInt8] = [UInt8(ascii: "{")]
        out.reserveCapacity(elements.reduce(2) { $0 + ($1?.utf8.count ?? 4) + 3 })
        for (i, element) in elements.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            guard let element else {
                out.append(contentsOf: "NULL".utf8)
                continue
            }
            out.append(UInt8(ascii: "\""))
            for byte in element.utf8 {
                if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { out.append(UInt8(ascii: "\\")) }
                out.append(byte)
            }
            out.append(UInt8(ascii: "\""))
        }
        out.append(UInt8(ascii: "}"))
        text = String(decoding: out, as: UTF8.self)
    }

    public init(_ elements: [Int64]) { self.init(integers: elements.map(String.init)) }
    public init(_ elements: [Int]) { self.init(integers: elements.map(String.init)) }

    private init(integers: [String]) { text = "{" + integers.joined(separator: ",") + "}" }

    public var postgresParameter: PostgresParameter { .text(text) }
}

/// A one-dimensional `bytea[]` parameter in binary format, for `$n::bytea[]`: a batch of byte
/// strings (stored replies, outbox records) as one bound parameter.
public struct PostgresByteaArray: PostgresBindable, Sendable, Hashable {
    public let elements: [[UInt8]?]

    public init(_ elements: [[UInt8]]) { self.elements = elements.map { Optional($0) } }

    /// nil is SQL NULL.
    public init(_ elements: [[UInt8]?]) { self.elements = elements }

    public var postgresParameter: PostgresParameter { .byteaArray(elements) }
}

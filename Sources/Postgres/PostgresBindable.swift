import Foundation

/// How one query parameter travels to the server.
public enum PostgresParameter: Sendable, Hashable {
    case null
    /// Text format with the type left for the server to infer (`$1::numeric` etc. when ambiguous).
    case text(String)
    /// Binary-format `bytea` (OID 17): arbitrary bytes, NUL included, no escaping.
    case bytea([UInt8])
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

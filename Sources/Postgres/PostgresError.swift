/// The single error type of the `Postgres` module.
///
/// `description` may contain the server's message but never the connection string or password:
/// connection-time messages from libpq are scrubbed of the configured password before they get here.
public struct PostgresError: Error, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable, Hashable {
        /// Could not connect, or the connection was lost.
        case connection
        /// The server (or the client, before sending) rejected a statement.
        case query
        /// A result cell could not be converted to the requested Swift type.
        case decode
        /// The connection or client was closed by its owner.
        case closed
    }

    public let kind: Kind
    /// Five-character SQLSTATE from `PG_DIAG_SQLSTATE`, when the server sent one.
    public let sqlState: String?
    /// Primary human-readable message (the server's, or one written by this module).
    public let message: String
    /// The server's `DETAIL` field, if any.
    public let detail: String?
    /// Name of the violated constraint, if any (`PG_DIAG_CONSTRAINT_NAME`).
    public let constraint: String?
    /// A cached prepared statement went stale inside a transaction (its result columns changed, or it was
    /// deallocated); it has been dropped, so retrying the transaction succeeds.
    var isStaleStatement = false

    public init(
        kind: Kind, sqlState: String? = nil, message: String, detail: String? = nil, constraint: String? = nil
    ) {
        self.kind = kind
        self.sqlState = sqlState
        self.message = message
        self.detail = detail
        self.constraint = constraint
    }

    /// True when retrying the whole operation (on a fresh connection / new transaction) may succeed.
    public var isRetriable: Bool {
        if kind == .connection || isStaleStatement { return true }
        guard let state = sqlState else { return false }
        if state.hasPrefix("08") { return true }  // connection exception class
        return Self.retriableStates.contains(state)
    }

    /// An error of a statement that the server will give again however long one waits: a
    /// statement refused as written or not permitted (42), data or constraint errors (22, 23), a
    /// missing feature (0A), a limit (54), and 28/3D should a statement report them. Outages,
    /// restarts and conflicts are not among them (`isRetriable`), nor is a connection that could
    /// not be made (`kind == .connection`, bad credentials and a missing database included: they
    /// are waited for, as a database being set up looks the same).
    public var isLastingStartupError: Bool {
        guard !isRetriable, let state = sqlState, state.utf8.count == 5 else { return false }
        return ["28", "3D", "42", "22", "23", "0A", "54"].contains(String(state.prefix(2)))
    }

    /// `23505 unique_violation`.
    public var isUniqueViolation: Bool { sqlState == "23505" }

    // 40001 serialization_failure, 40P01 deadlock_detected, 57P01-03 admin/crash shutdown,
    // cannot_connect_now, 53300 too_many_connections.
    private static let retriableStates: Set<String> = ["40001", "40P01", "57P01", "57P02", "57P03", "53300"]

    public var description: String {
        var text = "PostgresError.\(kind.rawValue)"
        if let sqlState { text += " [\(sqlState)]" }
        text += ": \(message)"
        if let detail, !detail.isEmpty { text += " (detail: \(detail))" }
        return text
    }
}

extension PostgresError {
    static func closed(_ what: String = "connection") -> PostgresError {
        PostgresError(kind: .closed, message: "the \(what) is closed")
    }

    static func decode(_ message: String) -> PostgresError {
        PostgresError(kind: .decode, message: message)
    }

    /// The server answered COMMIT with ROLLBACK: a statement of the transaction failed and its
    /// error was caught.
    static func rolledBackAtCommit() -> PostgresError {
        PostgresError(
            kind: .query, message: "the transaction was rolled back: a statement in it failed and its error was caught")
    }
}

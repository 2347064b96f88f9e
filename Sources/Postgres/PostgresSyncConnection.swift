internal import CLibPQ

/// A connection as seen by a body that runs on its serial queue (`PostgresConnection.onQueue`,
/// `transactionOnQueue`): each `query` runs synchronously, one after another, so a body of N
/// statements costs one hand-off to the queue and back instead of N.
///
/// Valid only while that body runs, on that queue: never keep it or use it elsewhere (it is not
/// `Sendable`, so it cannot be sent to another task).
public final class PostgresSyncConnection {
    private let handle: PGConnectionHandle
    /// The task whose operation this is was cancelled.
    private let isCancelled: () -> Bool
    /// `transactionOnQueue`: BEGIN goes with the first statement, so a body that runs none sends
    /// neither BEGIN nor COMMIT.
    private var beginPending: Bool
    /// BEGIN was sent by this connection: there is a transaction to commit or roll back.
    private(set) var began = false

    init(handle: PGConnectionHandle, beginPending: Bool = false, isCancelled: @escaping () -> Bool) {
        self.handle = handle
        self.beginPending = beginPending
        self.isCancelled = isCancelled
    }

    /// As `PostgresConnection.query`, run here and now. A cancel of the task stops the body: the
    /// running statement is cancelled on the server (SQLSTATE 57014), the next one is not started
    /// (`CancellationError`).
    public func query(_ sql: String, _ params: [any PostgresBindable] = []) throws -> PostgresQueryResult {
        if isCancelled() { throw CancellationError() }
        let parameters = params.map(\.postgresParameter)
        guard beginPending else { return try handle.execParams(sql, parameters, isCancelled: isCancelled) }
        beginPending = false
        // BEGIN and the first statement share a network round trip; whether the transaction began
        // is the server's word, also when the statement failed.
        defer { began = handle.transactionStatus != PQTRANS_IDLE }
        return try handle.execParams(sql, parameters, beginFirst: true, isCancelled: isCancelled)
    }

    /// Server process id, for logs.
    public var backendPID: Int32 { handle.backendPID }
}

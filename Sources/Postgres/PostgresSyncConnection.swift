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
    /// `commit` ended the transaction (or tried to): the surrounding one sends no COMMIT of its own.
    private(set) var didCommit = false
    /// Tells the surrounding `withTransaction` so.
    private let committed: () -> Void

    init(
        handle: PGConnectionHandle, beginPending: Bool = false, isCancelled: @escaping () -> Bool,
        committed: @escaping () -> Void
    ) {
        self.handle = handle
        self.beginPending = beginPending
        self.isCancelled = isCancelled
        self.committed = committed
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

    /// Ends the open transaction here, in this hand-off: COMMIT, and an error if the server answers
    /// it with ROLLBACK (a statement failed and its error was caught). In an `onQueue` body inside an
    /// async transaction, the transaction's last statements and its COMMIT so share one hop, and it
    /// sends no COMMIT of its own afterwards. Outside a transaction it does nothing. A cancelled task
    /// does not commit (`CancellationError`; the transaction is rolled back).
    public func commit() throws {
        guard !beginPending, handle.transactionStatus != PQTRANS_IDLE else { return }
        if isCancelled() { throw CancellationError() }
        didCommit = true
        committed()  // whatever COMMIT answers, the transaction is over
        try PostgresConnection.commit(handle)
    }

    /// The transaction's last statement (nothing follows it) and its COMMIT, sent together (one network round trip,
    /// with BEGIN too when it is the transaction's only statement): returns the statement's result
    /// once COMMIT succeeded. A statement that fails throws its own error, as `query` would, and
    /// nothing is committed: its transaction stays open, aborted, and is rolled back as after any
    /// failed statement (by `transactionOnQueue`, or the surrounding async transaction). A COMMIT that
    /// fails (a deferred constraint, a serialization failure) throws as `commit` would; the
    /// transaction is over either way, and none is sent afterwards. Outside a transaction it is
    /// `query`. A cancelled task does not commit (`CancellationError`, or the running statement is
    /// cancelled on the server).
    public func queryThenCommit(_ sql: String, _ params: [any PostgresBindable] = []) throws -> PostgresQueryResult {
        guard beginPending || handle.beginPending || handle.transactionStatus != PQTRANS_IDLE else {
            return try query(sql, params)
        }
        if isCancelled() { throw CancellationError() }
        let parameters = params.map(\.postgresParameter)
        let begin = beginPending
        beginPending = false
        defer {
            // The server's word: still open means the statement failed (or never went) and the
            // transaction awaits its ROLLBACK; otherwise it is over (committed, COMMIT failed, the
            // connection gone, or nothing began). An async transaction's BEGIN still pending: nothing
            // was sent, nothing began.
            let status = handle.transactionStatus
            let open = status == PQTRANS_INTRANS || status == PQTRANS_INERROR
            if begin { began = open }
            if !open && !handle.beginPending {
                didCommit = true
                committed()
            }
        }
        return try handle.execParams(sql, parameters, beginFirst: begin, commitAfter: true, isCancelled: isCancelled)
    }

    /// Server process id, for logs.
    public var backendPID: Int32 { handle.backendPID }
}

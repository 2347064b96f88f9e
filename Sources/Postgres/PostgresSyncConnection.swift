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

    /// Statements queued by `later`, in order: sent with the next statement, in its round trip.
    private var deferred: [(sql: String, params: [PostgresParameter])] = []

    /// As `PostgresConnection.query`, run here and now (with the statements `later` queued before
    /// it, in the same round trip). A cancel of the task stops the body: the running statement is
    /// cancelled on the server (SQLSTATE 57014), the next one is not started (`CancellationError`).
    public func query(_ sql: String, _ params: [any PostgresBindable] = []) throws -> PostgresQueryResult {
        try send([(sql, params.map(\.postgresParameter))], commit: false)[0]
    }

    /// Statements that do not need each other's results to be sent, in one network round trip
    /// (pipeline mode), run in order (after what `later` queued); returns their results, in order.
    /// As `query` otherwise: the first that fails throws its error, and none after it runs; outside
    /// a transaction block they are one implicit transaction (see `later`).
    public func pipeline(_ statements: [(sql: String, params: [any PostgresBindable])]) throws -> [PostgresQueryResult] {
        try send(statements.map { ($0.sql, $0.params.map(\.postgresParameter)) }, commit: false)
    }

    /// A statement whose result the body does not need: it is sent with the next statement (`query`,
    /// `queryThenCommit`, `commit`, or when the body returns), in the same network round trip
    /// (pipeline mode), and runs before it. If it fails, that call throws its error and nothing
    /// queued or sent after it runs; as with `query`, the transaction is then aborted (a COMMIT
    /// that carries it throws its error, not `rolledBackAtCommit`). A call refused before anything
    /// reached the server (a NUL in its SQL, a cancel) leaves them queued; a body that throws before
    /// they are sent drops them. Outside a transaction block they and the statement they go with
    /// run as one implicit transaction (all or nothing), except without the statement cache, where
    /// each commits on its own as it would alone.
    public func later(_ sql: String, _ params: [any PostgresBindable] = []) {
        deferred.append((sql, params.map(\.postgresParameter)))
    }

    /// Ends the open transaction here, in this hand-off: COMMIT (with the statements `later`
    /// queued, in one round trip), and an error if the server answers it with ROLLBACK (a statement
    /// failed and its error was caught). In an `onQueue` body inside an async transaction, the
    /// transaction's last statements and its COMMIT so share one hop, and it sends no COMMIT of its
    /// own afterwards. Outside a transaction it only sends what `later` queued. A cancelled task
    /// does not commit (`CancellationError`; the transaction is rolled back).
    public func commit() throws {
        guard deferred.isEmpty else {
            _ = try send([], commit: inTransaction)
            return
        }
        guard !beginPending, handle.transactionStatus != PQTRANS_IDLE else { return }
        if isCancelled() { throw CancellationError() }
        didCommit = true
        committed()  // whatever COMMIT answers, the transaction is over
        try PostgresConnection.commit(handle)
    }

    /// The transaction's last statement (nothing follows it) and its COMMIT, sent together (one network round trip,
    /// with BEGIN too when it is the transaction's only statement, and with what `later` queued): returns the
    /// statement's result once COMMIT succeeded. A statement that fails throws its own error, as `query` would, and
    /// nothing is committed: its transaction stays open, aborted, and is rolled back as after any
    /// failed statement (by `transactionOnQueue`, or the surrounding async transaction). A COMMIT that
    /// fails (a deferred constraint, a serialization failure) throws as `commit` would; the
    /// transaction is over either way, and none is sent afterwards. Outside a transaction it is
    /// `query`. A cancelled task does not commit (`CancellationError`, or the running statement is
    /// cancelled on the server).
    public func queryThenCommit(_ sql: String, _ params: [any PostgresBindable] = []) throws -> PostgresQueryResult {
        try send([(sql, params.map(\.postgresParameter))], commit: inTransaction)[0]
    }

    /// Sends what `later` queued, if anything (the body's end; see `PostgresConnection.onQueue`).
    func sendDeferred() throws {
        guard !deferred.isEmpty else { return }
        _ = try send([], commit: false)
    }

    /// Statements `later` queued and not sent yet.
    var hasDeferred: Bool { !deferred.isEmpty }

    /// A transaction is open or about to be (its BEGIN pending, here or in the surrounding async one).
    private var inTransaction: Bool { beginPending || handle.beginPending || handle.transactionStatus != PQTRANS_IDLE }

    /// The deferred statements and then `last` in one round trip, with the pending BEGIN first and
    /// COMMIT after (`commit`); the results of `last`, one per statement.
    private func send(_ last: [(sql: String, params: [PostgresParameter])], commit: Bool) throws -> [PostgresQueryResult] {
        if isCancelled() { throw CancellationError() }
        let statements = deferred + last
        deferred = []
        guard !statements.isEmpty else { return [] }
        let begin = beginPending
        beginPending = false
        let before = handle.roundTrips
        let results: [PostgresQueryResult]
        do {
            results = try handle.execPipeline(statements, beginFirst: begin, commitAfter: commit, isCancelled: isCancelled)
        } catch {
            if handle.roundTrips == before {
                // Refused before anything reached the server (a NUL, a value that cannot be bound,
                // a cancel): all of it is still to send, BEGIN included.
                deferred = Array(statements.dropLast(last.count))
                beginPending = begin
            } else {
                settle(begin: begin, commit: commit)
            }
            throw error
        }
        settle(begin: begin, commit: commit)
        guard results.count == statements.count else {
            throw PostgresError(kind: .query, message: "a pipeline of \(statements.count) statements returned \(results.count) results")
        }
        return Array(results.suffix(last.count))
    }

    /// After a pipeline reached the server, the server's word. BEGIN sent: the transaction began
    /// unless the connection is idle (nothing began, or a COMMIT ended it). COMMIT sent: still open
    /// means a statement failed (or never went) and the transaction awaits its ROLLBACK; otherwise it
    /// is over (committed, COMMIT failed, the connection gone, or nothing began). An async
    /// transaction's BEGIN still pending: nothing was sent, nothing began.
    private func settle(begin: Bool, commit: Bool) {
        let status = handle.transactionStatus
        let open = status == PQTRANS_INTRANS || status == PQTRANS_INERROR
        if begin { began = commit ? open : status != PQTRANS_IDLE }
        if commit && !open && !handle.beginPending {
            didCommit = true
            committed()
        }
    }

    /// Server process id, for logs.
    public var backendPID: Int32 { handle.backendPID }
}

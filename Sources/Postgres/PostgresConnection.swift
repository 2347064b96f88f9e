internal import CLibPQ
import Dispatch
import Logging

/// One libpq connection. Every libpq call runs on the connection's own serial queue, so blocking
/// network I/O never occupies Swift's cooperative thread pool; async methods hop there and back.
/// Calls from several tasks are safe and run one at a time.
public final class PostgresConnection: @unchecked Sendable {
    // `handle` is touched only on `queue`; `flags` is lock-protected. That is what makes the
    // @unchecked Sendable sound.
    private var handle: PGConnectionHandle?
    private let queue: DispatchQueue
    private let cancelHandle: PGCancelHandle?
    private let flags = Locked(Flags())
    private let logger: Logger
    /// Server process id, for logs and `pg_terminate_backend`.
    public let backendPID: Int32

    private struct Flags {
        var broken = false
        var closed = false
        var nextOperation: UInt64 = 0
        var running: UInt64?  // operation currently inside libpq, the only one a cancel may hit
        var cancelRequested: UInt64?  // latest operation whose task was cancelled
        var inTransaction = false  // as of the last operation; lets the pool skip a queue hop on release
        /// `withTransaction` has begun but sent no BEGIN yet: the next operation's first statement
        /// sends it, in the same hop to the queue (one hand-off per transaction fewer) and, for a
        /// cached prepared statement, the same round trip; an operation that sends none leaves it.
        var beginPending = false
        var handOffs: UInt64 = 0  // operations run on the queue (each one hop there and back)
        var roundTrips: UInt64 = 0  // the handle's count as of the last operation's end
        /// A body of `withTransaction` ended its transaction itself (`PostgresSyncConnection.commit`).
        var committedEarly = false
    }

    private init(handle: PGConnectionHandle, queue: DispatchQueue, logger: Logger) {
        self.handle = handle
        self.queue = queue
        self.cancelHandle = handle.makeCancelHandle()
        self.backendPID = handle.backendPID
        var logger = logger
        logger[metadataKey: "db.pid"] = "\(backendPID)"
        self.logger = logger
    }

    deinit {
        // PQfinish writes to the socket: release the handle on the queue, not on whatever thread runs deinit.
        guard let handle else { return }
        let box = UncheckedSendableBox(handle)
        queue.async { withExtendedLifetime(box) {} }
    }

    /// Opens a connection. A failure is a retriable `.connection` error without the password in it.
    public static func connect(_ config: PostgresConfiguration, logger: Logger) async throws -> PostgresConnection {
        let queue = DispatchQueue(label: "postgres.connection")
        let connection: PostgresConnection = try await withCheckedThrowingContinuation { continuation in
            queue.async {
                continuation.resume(
                    with: Result {
                        PostgresConnection(
                            handle: try PGConnectionHandle.open(config, logger: logger), queue: queue, logger: logger)
                    })
            }
        }
        connection.logger.debug("connected", metadata: ["db.url": "\(config.redactedURL)"])
        return connection
    }

    /// One statement with `$1…$n` placeholders bound to `params` (pass `Optional` values for NULL).
    /// Each distinct statement is prepared once per connection (see `PostgresConfiguration.preparedStatements`).
    /// In a cancelled task it throws `CancellationError` if it has not started yet; a running statement
    /// is cancelled on the server and throws `PostgresError` with SQLSTATE 57014.
    public func query(_ sql: String, _ params: [any PostgresBindable] = []) async throws -> PostgresQueryResult {
        let parameters = params.map(\.postgresParameter)
        return try await perform { try $0.execParams(sql, parameters, isCancelled: { self.cancelRequested }) }
    }

    /// Simple-query protocol: `sql` may hold several statements (migrations). No parameters, so never
    /// build `sql` from values.
    public func execute(_ sql: String) async throws {
        _ = try await perform { try $0.exec(sql) }
    }

    /// `body` in one hop to the connection's queue: its statements run there synchronously, with no
    /// hand-off each (`body` must not block on anything but them). Inside `withTransaction` a pending
    /// BEGIN goes first. Cancellation as for `query`; between two statements the next one throws
    /// `CancellationError`.
    public func onQueue<T: Sendable>(_ body: @escaping @Sendable (PostgresSyncConnection) throws -> T) async throws -> T {
        try await perform { handle in
            let connection = PostgresSyncConnection(
                handle: handle, isCancelled: { self.cancelRequested },
                committed: { self.flags.withLock { $0.committedEarly = true } })
            let value = try body(connection)
            try connection.sendDeferred()
            return value
        }
    }

    /// A whole transaction in one hop to the connection's queue: BEGIN (with the first statement),
    /// `body`'s statements, COMMIT; ROLLBACK when `body` throws (the error is rethrown), and the
    /// connection is marked broken if even that fails. A body that runs no statement sends neither
    /// BEGIN nor COMMIT. A cancelled task does not reach COMMIT: not started, it throws
    /// `CancellationError`; a running statement is cancelled on the server; either way what ran is
    /// rolled back. Throws if the server answers COMMIT with ROLLBACK (a statement failed and `body`
    /// caught its error). Not for use inside `withTransaction`.
    public func transactionOnQueue<T: Sendable>(
        _ body: @escaping @Sendable (PostgresSyncConnection) throws -> T
    ) async throws -> T {
        try await perform { handle in
            let connection = PostgresSyncConnection(
                handle: handle, beginPending: true, isCancelled: { self.cancelRequested }, committed: {})
            let value: T
            do {
                value = try body(connection)
                // What `later` queued goes with COMMIT, in its round trip.
                if connection.hasDeferred { try connection.commit() }
                if connection.began && !connection.didCommit && self.cancelRequested { throw CancellationError() }
            } catch {
                if connection.began && !connection.didCommit { self.rollBack(handle) }
                throw error
            }
            // No statement ran, or `body` committed itself: nothing (more) to commit.
            guard connection.began && !connection.didCommit else { return value }
            try Self.commit(handle)
            return value
        }
    }

    /// Connection lost, closed, or left in an unknown state: do not reuse it.
    public var isBroken: Bool { flags.withLock { $0.broken || $0.closed } }

    /// Operations handed to the connection's queue so far, each one hop there and back (statements,
    /// `onQueue` and `transactionOnQueue` bodies, COMMIT, ROLLBACK); for tests and diagnostics.
    public var handOffs: UInt64 { flags.withLock { $0.handOffs } }

    /// Network round trips to the server so far, as of the last operation's end: each one a wait
    /// of the queue's thread for an answer (a pipeline such as BEGIN, a statement and COMMIT is
    /// one; preparing a statement not cached yet is one more); for tests and diagnostics.
    public var roundTrips: UInt64 { flags.withLock { $0.roundTrips } }

    /// Closes the connection; later calls throw a `.closed` error. Idempotent.
    public func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            queue.async {
                if self.handle != nil { self.logger.debug("closing connection") }
                self.handle = nil  // PQfinish, here on the queue
                self.flags.withLock { $0.closed = true }
                continuation.resume()
            }
        }
    }

    // MARK: - Module internals

    func markBroken() { flags.withLock { $0.broken = true } }

    /// The running operation's task was cancelled; lets a multi-step operation stop between steps.
    private var cancelRequested: Bool {
        flags.withLock { $0.running != nil && $0.running == $0.cancelRequested }
    }

    /// Simple query returning its result (its command tag, say).
    func executeReturningResult(_ sql: String) async throws -> PostgresQueryResult {
        try await perform { try $0.exec(sql) }
    }

    /// `query` that runs even in a cancelled task: for clean-up such as releasing locks.
    func queryUncancellable(_ sql: String, _ params: [any PostgresBindable]) async throws -> PostgresQueryResult {
        let parameters = params.map(\.postgresParameter)
        return try await perform(cancellable: false) { try $0.execParams(sql, parameters) }
    }

    /// BEGIN … COMMIT around `body`; ROLLBACK when it throws, and the connection is marked broken
    /// (so the pool drops it) if even that fails. A cancelled task does not reach COMMIT; the pool rolls
    /// the open transaction back when the connection is handed back.
    /// BEGIN travels with the body's first statement (same queue hop, just before it, in one
    /// pipeline when it can); a body that runs no statement sends neither BEGIN nor COMMIT.
    func withTransaction<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        flags.withLock {
            $0.beginPending = true
            $0.committedEarly = false
        }
        let value: T
        do {
            value = try await body(self)
        } catch {
            guard takeBeginPending() == false else { throw error }  // nothing began: nothing to roll back
            guard takeCommittedEarly() == false else { throw error }  // ended by its COMMIT, failed or not
            do {
                _ = try await perform(cancellable: false) { try $0.exec("ROLLBACK") }
            } catch let rollbackError {
                logger.warning("ROLLBACK failed; discarding the connection", metadata: ["error": "\(rollbackError)"])
                markBroken()
            }
            throw error
        }
        guard takeBeginPending() == false else { return value }  // no statement ran: nothing to commit
        guard takeCommittedEarly() == false else { return value }  // committed in the body's last hop
        _ = try await perform { try Self.commit($0) }
        return value
    }

    /// Clears and returns whether the body committed its transaction itself.
    private func takeCommittedEarly() -> Bool {
        flags.withLock { flags in
            defer { flags.committedEarly = false }
            return flags.committedEarly
        }
    }

    /// COMMIT on the queue (see `PGConnectionHandle.commit`: COMMIT answered with ROLLBACK throws).
    static func commit(_ handle: PGConnectionHandle) throws { try handle.commit() }

    /// ROLLBACK on the queue, inside an operation, out of a cancel's reach (a cancel still in flight
    /// was meant for the statement that failed); marks the connection broken if it fails.
    private func rollBack(_ handle: PGConnectionHandle) {
        flags.withLock { $0.running = nil }
        do {
            _ = try handle.exec("ROLLBACK")
        } catch {
            logger.warning("ROLLBACK failed; discarding the connection", metadata: ["error": "\(error)"])
            markBroken()
        }
    }

    /// Clears a BEGIN not sent yet; true if there was one.
    private func takeBeginPending() -> Bool {
        flags.withLock { flags in
            defer { flags.beginPending = false }
            return flags.beginPending
        }
    }

    /// Before going back to a pool: true when the connection is healthy and outside any transaction,
    /// rolling back one the user left open.
    func prepareForReuse() async -> Bool {
        let (broken, inTransaction) = flags.withLock { ($0.broken || $0.closed, $0.inTransaction) }
        if broken { return false }
        if !inTransaction { return true }
        logger.notice("rolling back a transaction left open on a pooled connection")
        do {
            return try await perform(cancellable: false) { handle in
                switch handle.transactionStatus {
                case PQTRANS_IDLE:
                    return true
                case PQTRANS_INTRANS, PQTRANS_INERROR:
                    _ = try handle.exec("ROLLBACK")
                    return handle.isUsable
                default:
                    return false
                }
            }
        } catch {
            return false
        }
    }

    /// Runs `operation` on the queue; the handle is only ever used inside such operations.
    /// Cancellable operations of a cancelled task: one not yet started throws `CancellationError`; one
    /// inside libpq gets a server-side cancel (and fails with SQLSTATE 57014). Clean-up statements
    /// (ROLLBACK, unlocks) pass `cancellable: false` so a cancelled task still leaves things tidy.
    private func perform<T: Sendable>(
        cancellable: Bool = true, _ operation: @escaping @Sendable (PGConnectionHandle) throws -> T
    ) async throws -> T {
        guard cancellable else {
            return try await withCheckedThrowingContinuation { continuation in
                queue.async { continuation.resume(with: Result { try self.runOnQueue(nil, operation) }) }
            }
        }
        let id = flags.withLock { flags in
            flags.nextOperation &+= 1
            return flags.nextOperation
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                queue.async { continuation.resume(with: Result { try self.runOnQueue(id, operation) }) }
            }
        } onCancel: {
            self.cancel(id)
        }
    }

    private func runOnQueue<T>(_ id: UInt64?, _ operation: (PGConnectionHandle) throws -> T) throws -> T {
        dispatchPrecondition(condition: .onQueue(queue))
        guard let handle else { throw PostgresError.closed() }
        // Under the same lock as `cancel`: either it sees us running, or we see its request here.
        let (cancelledBeforeStart, begin) = flags.withLock { flags -> (Bool, Bool) in
            flags.handOffs &+= 1
            if let id, flags.cancelRequested == id { return (true, false) }
            flags.running = id
            defer { flags.beginPending = false }
            return (false, flags.beginPending)
        }
        if cancelledBeforeStart { throw CancellationError() }
        defer {
            let usable = handle.isUsable
            let inTransaction = handle.transactionStatus != PQTRANS_IDLE
            let roundTrips = handle.roundTrips
            let beginUnsent = handle.takeBeginPending()  // no statement ran: the next operation sends it
            let newlyBroken = flags.withLock { flags in
                if beginUnsent { flags.beginPending = true }
                flags.running = nil
                flags.inTransaction = inTransaction
                flags.roundTrips = roundTrips
                defer { if !usable { flags.broken = true } }
                return !usable && !flags.broken
            }
            if newlyBroken { logger.warning("connection lost", metadata: ["error": "\(handle.errorMessage)"]) }
        }
        // The operation's first statement sends it (with it, in one round trip, when it can).
        handle.beginPending = begin
        return try operation(handle)
    }

    /// PQcancel blocks (it opens a socket), so it runs on a global queue, never on the cancelling task's
    /// thread. Holding the lock while sending keeps the operation from finishing and being followed by
    /// the next one in between, so a cancel never hits a statement it was not meant for.
    private func cancel(_ id: UInt64) {
        let running = flags.withLock { flags in
            flags.cancelRequested = id
            return flags.running == id
        }
        guard running, let cancelHandle else { return }
        DispatchQueue.global().async {
            self.flags.withLock { flags in
                guard flags.running == id else { return }
                self.logger.debug("cancelling the running statement")
                cancelHandle.send()
            }
        }
    }
}

/// Moves a non-Sendable value to another thread when the caller guarantees exclusive use.
struct UncheckedSendableBox<Value>: @unchecked Sendable {
    let value: Value

    init(_ value: Value) { self.value = value }
}

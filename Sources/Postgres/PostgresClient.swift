import Logging

/// A small connection pool. Connections open lazily up to `poolSize`; further callers wait in FIFO
/// order (suspended, no polling). A connection found broken when handed back is closed, and its slot is
/// refilled on demand, which is how the client recovers from lost connections.
public final class PostgresClient: Sendable {
    private let configuration: PostgresConfiguration
    private let poolSize: Int
    private let logger: Logger
    private let state = Locked(PoolState())
    /// Told how long a caller waited for a connection, when it had to wait (all were lent out).
    private let onWait: (@Sendable (Duration) -> Void)?

    private enum Grant: Sendable {
        case connection(PostgresConnection)
        /// Permission to open one connection; `open` has already been counted for it.
        case openSlot
    }

    private struct Waiter {
        let id: UInt64
        let continuation: CheckedContinuation<Grant, any Error>
    }

    private struct PoolState {
        var idle: [PostgresConnection] = []
        var open = 0  // connections open or being opened, idle or lent out
        var waiters: [Waiter] = []  // FIFO
        var nextWaiterID: UInt64 = 0
        var closed = false
    }

    public init(configuration: PostgresConfiguration, logger: Logger, onWait: (@Sendable (Duration) -> Void)? = nil) {
        self.configuration = configuration
        self.poolSize = max(1, configuration.poolSize)
        self.logger = logger
        self.onWait = onWait
    }

    /// Lends a connection to `body` and takes it back afterwards, even when `body` throws.
    /// A transaction `body` leaves open is rolled back before the connection is reused.
    public func withConnection<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        let connection = try await acquire()
        let value: T
        do {
            value = try await body(connection)
        } catch {
            await release(connection)
            throw error
        }
        await release(connection)
        return value
    }

    public func query(_ sql: String, _ params: [any PostgresBindable] = []) async throws -> PostgresQueryResult {
        try await withConnection { try await $0.query(sql, params) }
    }

    /// Runs `body` between BEGIN and COMMIT on one connection; ROLLBACK when it throws (the error is
    /// rethrown), and the connection is discarded if the ROLLBACK fails. Throws if the server rolled
    /// back at COMMIT because a statement failed inside `body` and its error was swallowed.
    public func transaction<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        try await withConnection { try await $0.withTransaction(body) }
    }

    /// `body`'s statements in one hop to a connection's queue (see `PostgresConnection.onQueue`).
    public func onQueue<T: Sendable>(_ body: @escaping @Sendable (PostgresSyncConnection) throws -> T) async throws -> T {
        try await withConnection { try await $0.onQueue(body) }
    }

    /// A whole transaction in one hop to a connection's queue (see
    /// `PostgresConnection.transactionOnQueue`): BEGIN, `body`'s statements, COMMIT; ROLLBACK when
    /// it throws. For bodies that do nothing but SQL and computation; `transaction` for the others.
    public func transactionOnQueue<T: Sendable>(
        _ body: @escaping @Sendable (PostgresSyncConnection) throws -> T
    ) async throws -> T {
        try await withConnection { try await $0.transactionOnQueue(body) }
    }

    /// Closes idle connections and fails waiting callers with `.closed`; connections in use are
    /// closed when they are handed back. Later calls throw `.closed`.
    public func close() async {
        let (idle, waiters) = state.withLock { state in
            state.closed = true
            let idle = state.idle
            state.idle = []
            state.open -= idle.count
            let waiters = state.waiters
            state.waiters = []
            return (idle, waiters)
        }
        for waiter in waiters { waiter.continuation.resume(throwing: PostgresError.closed("client")) }
        for connection in idle { await connection.close() }
    }

    // MARK: - Pool mechanics

    private func acquire() async throws -> PostgresConnection {
        let asked = ContinuousClock.now
        let (grant, waited) = try await nextGrant()
        if waited, let onWait { onWait(ContinuousClock.now - asked) }
        switch grant {
        case .connection(let connection):
            return connection
        case .openSlot:
            do {
                return try await PostgresConnection.connect(configuration, logger: logger)
            } catch {
                logger.warning("could not open a pooled connection", metadata: ["error": "\(error)"])
                slotFreed()
                throw error
            }
        }
    }

    /// The grant, and whether the caller queued for it.
    private func nextGrant() async throws -> (Grant, waited: Bool) {
        let id = state.withLock { state in
            state.nextWaiterID &+= 1
            return state.nextWaiterID
        }
        var queued = false
        let grant = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Grant, any Error>) in
                let decision: Result<Grant, any Error>? = state.withLock { state in
                    if state.closed { return .failure(PostgresError.closed("client")) }
                    // Checked under the lock: onCancel either ran before (we see the flag here) or
                    // runs after we are queued (it finds and removes us).
                    if Task.isCancelled { return .failure(CancellationError()) }
                    if let connection = state.idle.popLast() { return .success(.connection(connection)) }
                    if state.open < poolSize {
                        state.open += 1
                        return .success(.openSlot)
                    }
                    state.waiters.append(Waiter(id: id, continuation: continuation))
                    return nil
                }
                if let decision { continuation.resume(with: decision) } else { queued = true }
            }
        } onCancel: {
            let waiter = state.withLock { state -> Waiter? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index)
            }
            waiter?.continuation.resume(throwing: CancellationError())
        }
        return (grant, queued)
    }

    /// A connection went away (or never opened): pass its slot to the first waiter, if any.
    private func slotFreed() {
        let waiter = state.withLock { state -> Waiter? in
            state.open -= 1
            guard !state.closed, !state.waiters.isEmpty else { return nil }
            state.open += 1
            return state.waiters.removeFirst()
        }
        waiter?.continuation.resume(returning: .openSlot)
    }

    private func release(_ connection: PostgresConnection) async {
        guard await connection.prepareForReuse() else {
            logger.info("discarding a broken connection", metadata: ["db.pid": "\(connection.backendPID)"])
            await connection.close()
            slotFreed()
            return
        }
        enum Outcome {
            case close, keep
            case handTo(Waiter)
        }
        let outcome = state.withLock { state -> Outcome in
            if state.closed {
                state.open -= 1
                return .close
            }
            if !state.waiters.isEmpty { return .handTo(state.waiters.removeFirst()) }
            state.idle.append(connection)
            return .keep
        }
        switch outcome {
        case .close: await connection.close()
        case .handTo(let waiter): waiter.continuation.resume(returning: .connection(connection))
        case .keep: break
        }
    }
}

import Postgres
import Synchronization
import ServiceContextModule

/// Group commit for cart requests, and for the deduction results and reads that ride with them.
/// The cart changes and reads of concurrent requests go to PostgreSQL together: one transaction
/// (BEGIN with the batch function, then the replies with COMMIT: two round trips) in one hand-off
/// to the connection's queue and one WAL flush for the whole batch, instead of up to four round
/// trips and a flush per request. A request that arrives while `maxConcurrentBatches` batches are
/// running waits for the next batch, so batches grow with the load. A new batch waits `window`
/// for company before it starts (a group-commit delay, like PostgreSQL's `commit_delay` or the
/// producer's `linger.ms`): at a steady rate requests otherwise arrive one at a time and each
/// becomes a batch of its own, with its own round trips and waits.
/// With a zero window a lone request goes at once, from its own task.
///
/// Deduction results (`finish`) ride with the batch: their orders move in a statement sent in the
/// batch's first round trip and their notifications go to the outbox in its second, so that a
/// result costs no round trip, transaction or WAL flush of its own when cart requests are about.
///
/// Reads of the request pipeline (`read`: the cart create_order checks, a page of orders) ride with
/// it too, as statements in the batch's first round trip: a read costs no round trip of its own.
/// It sees what committed before it and the batch's own changes, which commit with it; its result
/// is handed out only once the batch committed.
///
/// Each request's reply is stored under its idempotency key in the batch's transaction, exactly
/// as a single-request transaction would. The dispatcher never runs two records of one lane at
/// once, and a batch keeps the order in which its requests arrived for any one user.
public final class CartBatcher: Sendable {
    public struct Request: Sendable {
        public var key: String
        public var userId: Int64
        public var operation: OrderStore.CartOperation
        /// The reply for what the operation found; its bytes are stored under `key` in the same
        /// transaction. Throwing fails the request (as an internal error), not its batch-mates.
        public var reply: @Sendable (OrderStore.CartChange) throws -> RequestOutcome

        public init(key: String, userId: Int64, operation: OrderStore.CartOperation, reply: @escaping @Sendable (OrderStore.CartChange) throws -> RequestOutcome) {
            self.key = key
            self.userId = userId
            self.operation = operation
            self.reply = reply
        }
    }

    /// A deduction result to apply: the order moves from pending to `status`, and the
    /// notification `notification` builds from the moved order is queued in the outbox.
    struct Finish: Sendable {
        var orderId: Int64
        var status: OrderStatus
        var notification: @Sendable (OrderStore.FinishedOrder) -> OrderStore.OutboxRecord

        init(orderId: Int64, status: OrderStatus, notification: @escaping @Sendable (OrderStore.FinishedOrder) -> OrderStore.OutboxRecord) {
            self.orderId = orderId
            self.status = status
            self.notification = notification
        }
    }

    /// A read: its statement, and what its rows become (on the connection's queue).
    struct Read: Sendable {
        var sql: String
        var params: [any PostgresBindable]
        var decode: @Sendable ([PostgresRow]) throws -> any Sendable
    }

    /// What a batch runs: a cart request, a deduction result or a read.
    enum Job: Sendable {
        case cart(Request)
        case finish(Finish)
        case read(Read)

        /// Carts are locked in this order (see `execute`); a result or a read locks no cart.
        var userId: Int64 {
            if case .cart(let r) = self { return r.userId }
            return 0
        }
    }

    enum JobOutcome: Sendable {
        case cart(Outcome)
        /// Whether the order moved (false: it was not pending, a repeat or a late result).
        case finished(moved: Bool)
        case read(any Sendable)
    }

    public enum Outcome: Sendable, Equatable {
        /// Committed, with this reply stored under the request's key.
        case stored(RequestOutcome)
        /// The key was stored before (another delivery of the same request): send its reply.
        case duplicate
    }

    public struct Configuration: Sendable {
        /// Requests per transaction at most.
        public var maxBatch = 256
        /// Batches running at once, each on its own pooled connection.
        public var maxConcurrentBatches = 2
        /// How long a new batch waits for more requests before it starts (a worker going on with
        /// what queued behind its batch does not wait); zero: a lone request goes at once. Measured
        /// at 1,000 req/s on the mock cluster, 3 ms: ~1 switch and ~10 % of the service's CPU per
        /// request less, p50 up to 3 ms later, p99 within the noise; a blast unchanged
        /// (docs/performance.md, session 10).
        public var window: Duration = .milliseconds(3)
        public init() {}
    }

    private struct Pending {
        let job: Job
        let continuation: CheckedContinuation<JobOutcome, any Error>
        /// The request's span, which the batch's span links to (nil when not tracing).
        var context: ServiceContext? = Spans.currentContext
    }

    private struct State {
        var queue: [Pending] = []
        var running = 0
        /// A worker waits out its window: what queues now is for its batch, no second worker.
        var gathering = false
    }

    public let store: OrderStore
    public let configuration: Configuration
    private let state = Mutex(State())

    public init(store: OrderStore, configuration: Configuration = Configuration()) {
        self.store = store
        self.configuration = configuration
    }

    public func run(_ request: Request) async throws -> Outcome {
        guard case .cart(let outcome) = try await run(.cart(request)) else { throw PersistFailure.unexpected("a cart request finished an order") }
        return outcome
    }

    /// Applies a deduction result with the next batch; true when the order moved.
    func finish(_ finish: Finish) async throws -> Bool {
        guard case .finished(let moved) = try await run(.finish(finish)) else { throw PersistFailure.unexpected("a deduction result got a cart outcome") }
        return moved
    }

    /// Runs `sql` with the next batch; its rows as `decode` makes them.
    func read<T: Sendable>(_ sql: String, _ params: [any PostgresBindable], decode: @escaping @Sendable ([PostgresRow]) throws -> T) async throws -> T {
        guard case .read(let value) = try await run(.read(Read(sql: sql, params: params, decode: { try decode($0) }))), let typed = value as? T
        else { throw PersistFailure.unexpected("a read got another outcome") }
        return typed
    }

    private func run(_ job: Job) async throws -> JobOutcome {
        // No window, nothing queued and a batch slot free: this request is a batch of its own, run
        // from the caller's task (no worker task to start and wake). Requests arriving meanwhile queue for
        // a worker, which this one starts on its way out when any are left.
        let leads = state.withLock { s -> Bool in
            guard configuration.window == .zero, s.queue.isEmpty, s.running < configuration.maxConcurrentBatches else { return false }
            s.running += 1
            return true
        }
        if leads {
            defer { if finishLeading() { Task { await self.work() } } }
            return try await executeOne(job)
        }
        return try await withCheckedThrowingContinuation { continuation in
            let startWorker = state.withLock { s -> Bool in
                s.queue.append(Pending(job: job, continuation: continuation))
                guard s.running < configuration.maxConcurrentBatches, !s.gathering else { return false }
                s.running += 1
                if configuration.window > .zero { s.gathering = true }
                return true
            }
            if startWorker { Task { await self.work(gathering: configuration.window > .zero) } }
        }
    }

    /// A leading request is done: when requests queued behind it (all slots were busy, or they
    /// came between its check and now), its batch slot passes to a new worker (true: start it),
    /// so a queued request never waits without one; else the slot is freed.
    private func finishLeading() -> Bool {
        state.withLock { s in
            if !s.queue.isEmpty { return true }
            s.running -= 1
            return false
        }
    }

    /// One request as a batch of its own, from the caller's task.
    private func executeOne(_ job: Job) async throws -> JobOutcome {
        try await Spans.batch("cart batch", [Spans.currentContext]) { try await commit(jobs: [job])[0] }
    }

    /// Takes what is queued, batch after batch, until the queue is empty; `gathering`, a worker
    /// started for a request that found a batch slot free waits `window` first so that its batch
    /// takes what arrives meanwhile (not cancellable: the requests wait for it).
    private func work(gathering: Bool = false) async {
        if gathering { try? await Task.sleep(for: configuration.window) }
        var first = gathering
        while true {
            let batch = state.withLock { s -> [Pending] in
                if first { s.gathering = false }
                let n = min(configuration.maxBatch, s.queue.count)
                guard n > 0 else {
                    s.running -= 1
                    return []
                }
                defer { s.queue.removeFirst(n) }
                return Array(s.queue.prefix(n))
            }
            first = false
            if batch.isEmpty { return }
            await execute(batch)
        }
    }

    private func execute(_ batch: [Pending]) async {
        // By user, so that concurrent batches lock carts in one order (no deadlock between them);
        // stable, so one user's requests keep their order. Indices are sorted, not the (large)
        // elements, which the sort would copy at every move.
        let users = batch.map(\.job.userId)
        let sorted = batch.indices
            .sorted { (users[$0], $0) < (users[$1], $1) }
            .map { batch[$0] }
        do {
            let outcomes = try await Spans.batch("cart batch", sorted.map(\.context)) { try await commit(jobs: sorted.map(\.job)) }
            for (pending, outcome) in zip(sorted, outcomes) { pending.continuation.resume(returning: outcome) }
        } catch {
            // A transient failure (connection lost, deadlock, the database down) is every
            // request's: the dispatcher retries each. Anything else may be one request's fault:
            // run them one by one, so that the others still succeed.
            if sorted.count > 1, !Self.isTransient(error) {
                for pending in sorted {
                    do { pending.continuation.resume(returning: try await commit(jobs: [pending.job])[0]) } catch {
                        pending.continuation.resume(throwing: error)
                    }
                }
            } else {
                for pending in sorted { pending.continuation.resume(throwing: error) }
            }
        }
    }

    /// Cart requests alone as one batch (tests).
    func commit(_ requests: [Request]) async throws -> [Outcome] {
        try await commit(jobs: requests.map(Job.cart)).map { outcome in
            guard case .cart(let o) = outcome else { throw PersistFailure.unexpected("a cart request finished an order") }
            return o
        }
    }

    /// One transaction for `jobs`, outcomes in their order: BEGIN, the cart batch, the orders'
    /// moves and the reads in one round trip; the notifications, the replies and COMMIT in the second.
    func commit(jobs: [Job]) async throws -> [JobOutcome] {
        let reads = jobs.compactMap { job -> Read? in if case .read(let r) = job { r } else { nil } }
        if reads.count == jobs.count {
            // Reads alone need no transaction: one round trip, no COMMIT.
            return try await store.syncRead { tx in
                try zip(reads, try tx.batch([], finishing: [], reading: reads.map { ($0.sql, $0.params) }).reads).map { read, rows in
                    JobOutcome.read(try read.decode(rows))
                }
            }
        }
        // One hand-off to the connection's queue for the whole transaction, replies built there too.
        return try await store.syncTransaction { tx in
            var requests: [Request] = [], finishes: [Finish] = [], reads: [Read] = []
            for job in jobs {
                switch job {
                case .cart(let r): requests.append(r)
                case .finish(let f): finishes.append(f)
                case .read(let r): reads.append(r)
                }
            }
            let results = try tx.batch(
                requests.map { ($0.key, $0.userId, $0.operation) }, finishing: finishes.map { ($0.orderId, $0.status) },
                reading: reads.map { ($0.sql, $0.params) })
            let found = results.carts, moved = results.finished
            let readOutcomes = try zip(reads, results.reads).map { read, rows in try read.decode(rows) }
            var cartOutcomes: [Outcome] = []
            var replies: [(key: String, reply: [UInt8])] = []
            for (request, change) in zip(requests, found) {
                guard let change else {
                    cartOutcomes.append(.duplicate)
                    continue
                }
                let reply = try request.reply(change)
                replies.append((request.key, reply.reply))
                cartOutcomes.append(.stored(reply))
            }
            var finishOutcomes: [Bool] = []
            var notifications: [OrderStore.OutboxRecord] = []
            for (finish, done) in zip(finishes, moved) {
                finishOutcomes.append(done != nil)
                if let done { notifications.append(finish.notification(done)) }
            }
            try tx.enqueue(notifications)
            try tx.storeRepliesThenCommit(replies)
            var carts = cartOutcomes.makeIterator(), finished = finishOutcomes.makeIterator(), read = readOutcomes.makeIterator()
            return try jobs.map { job in
                switch job {
                case .cart: guard let o = carts.next() else { throw PersistFailure.unexpected("cart batch lost an outcome") }; return .cart(o)
                case .finish: guard let m = finished.next() else { throw PersistFailure.unexpected("cart batch lost a result") }; return .finished(moved: m)
                case .read: guard let r = read.next() else { throw PersistFailure.unexpected("cart batch lost a read") }; return .read(r)
                }
            }
        }
    }

    static func isTransient(_ error: any Error) -> Bool {
        (error as? PostgresError)?.isRetriable ?? false
    }
}

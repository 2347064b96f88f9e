import Synchronization

/// Coalesces product lookups of concurrent requests into one upstream request; every caller gets
/// the part of the answer it asked for. Two ways of gathering:
/// - `window` zero: a look-up leaves at once, in the caller's own task, unless
///   `maxInFlight` upstream requests are already on their way; then it waits and rides with the
///   next request, which leaves as soon as one of those returns. Batches grow with the load and a
///   lone look-up waits for nothing — no timer, no extra task.
/// - `window` above zero (the service's default, 1 ms): ids asked within `window` of each other
///   travel together (a timer per batch).
/// Either way at most `maxIds` ids per upstream request. Optionally remembers answers for
/// `maxStaleness` (zero: never), which callers may use only where slightly old details are
/// acceptable (add_item), never for create_order.
public final class CoalescingProductCatalog: Sendable {
    private let upstream: any ProductCatalog
    private let window: Duration
    private let maxIds: Int
    private let maxInFlight: Int
    private let maxStaleness: Duration
    private let state = Mutex(State())

    typealias Waiter = CheckedContinuation<Result<ProductLookup, UpstreamFailure>, Never>

    private struct Batch {
        let id: Int
        var ids: Set<Int64> = []
        var waiters: [Waiter] = []
    }

    private struct State {
        /// Batches not sent yet, oldest first; only the last one takes more ids.
        var waiting: [Batch] = []
        var inFlight = 0
        var nextBatchId = 0
        var cache: [Int64: (product: Product, at: ContinuousClock.Instant)] = [:]

        mutating func newBatch() -> Batch {
            nextBatchId &+= 1
            return Batch(id: nextBatchId)
        }
    }

    public init(
        upstream: any ProductCatalog, window: Duration = .zero, maxIds: Int = 500, maxInFlight: Int = 8,
        maxStaleness: Duration = .zero
    ) {
        self.upstream = upstream
        self.window = window
        self.maxIds = max(1, maxIds)
        self.maxInFlight = max(1, maxInFlight)
        self.maxStaleness = maxStaleness
    }

    /// Current details (no cache).
    public func lookup(_ ids: [Int64]) async throws(UpstreamFailure) -> ProductLookup {
        let all = try await (window > .zero ? joinWindow(ids) : joinInFlight(ids)).get()
        var products: [Int64: Product] = [:]
        for id in ids { if let p = all.products[id] { products[id] = p } }
        var seen = Set<Int64>()
        return ProductLookup(products: products, notFound: ids.filter { products[$0] == nil && seen.insert($0).inserted })
    }

    /// Details no older than `maxStaleness` (asks upstream for what the cache lacks).
    public func recentLookup(_ ids: [Int64]) async throws(UpstreamFailure) -> ProductLookup {
        guard maxStaleness > .zero else { return try await lookup(ids) }
        let now = ContinuousClock.now
        var products: [Int64: Product] = [:]
        state.withLock { s in
            for id in ids { if let c = s.cache[id], now - c.at <= maxStaleness { products[id] = c.product } }
        }
        let missing = ids.filter { products[$0] == nil }
        guard !missing.isEmpty else { return ProductLookup(products: products, notFound: []) }
        let fresh = try await lookup(missing)
        for (id, p) in fresh.products { products[id] = p }
        return ProductLookup(products: products, notFound: fresh.notFound)
    }

    // MARK: Gathering by requests in flight (window zero)

    private func joinInFlight(_ ids: [Int64]) async -> Result<ProductLookup, UpstreamFailure> {
        let goesNow = state.withLock { s -> Bool in
            guard s.inFlight < maxInFlight else { return false }
            s.inFlight += 1
            return true
        }
        if goesNow {
            // Alone, from the caller's task: no batch, no hop.
            let result = await ask(Array(Set(ids)).sorted())
            finished()
            return result
        }
        return await withCheckedContinuation { (waiter: Waiter) in
            let send = state.withLock { s -> Batch? in
                // A request returned meanwhile: go with the batch now instead of waiting.
                add(ids, waiter, to: &s)
                guard s.inFlight < maxInFlight, !s.waiting.isEmpty else { return nil }
                s.inFlight += 1
                return s.waiting.removeFirst()
            }
            if let send { start(send) }
        }
    }

    /// Adds a caller to the open (last) batch, or to a new one when that would pass `maxIds`.
    private func add(_ ids: [Int64], _ waiter: Waiter, to s: inout State) {
        if s.waiting.isEmpty || (s.waiting.last.map { $0.ids.union(ids).count > maxIds } ?? true) {
            s.waiting.append(s.newBatch())
        }
        let last = s.waiting.count - 1
        s.waiting[last].ids.formUnion(ids)
        s.waiting[last].waiters.append(waiter)
    }

    /// An upstream request returned: the oldest waiting batch leaves.
    private func finished() {
        let next = state.withLock { s -> Batch? in
            guard !s.waiting.isEmpty else {
                s.inFlight -= 1
                return nil
            }
            return s.waiting.removeFirst()  // takes over the returned request's place
        }
        if let next { start(next) }
    }

    private func start(_ batch: Batch) {
        Task {
            let result = await self.ask(batch.ids.sorted())
            batch.waiters.forEach { $0.resume(returning: result) }
            self.finished()
        }
    }

    // MARK: Gathering by time (window above zero)

    private func joinWindow(_ ids: [Int64]) async -> Result<ProductLookup, UpstreamFailure> {
        await withCheckedContinuation { (waiter: Waiter) in
            let (full, timer) = state.withLock { s -> (Batch?, Int?) in
                var full: Batch?
                if let open = s.waiting.last, open.ids.union(ids).count > maxIds { full = s.waiting.removeLast() }
                var timer: Int?
                if s.waiting.isEmpty {
                    let b = s.newBatch()
                    s.waiting.append(b)
                    timer = b.id
                }
                s.waiting[s.waiting.count - 1].ids.formUnion(ids)
                s.waiting[s.waiting.count - 1].waiters.append(waiter)
                return (full, timer)
            }
            if let full { send(full) }
            if let timer {
                Task { [window] in
                    try? await Task.sleep(for: window)
                    self.flush(timer)
                }
            }
        }
    }

    private func flush(_ id: Int) {
        let batch = state.withLock { s -> Batch? in
            guard let open = s.waiting.last, open.id == id else { return nil }  // already sent because it filled up
            return s.waiting.removeLast()
        }
        if let batch { send(batch) }
    }

    private func send(_ batch: Batch) {
        Task {
            let result = await self.ask(batch.ids.sorted())
            batch.waiters.forEach { $0.resume(returning: result) }
        }
    }

    // MARK: Upstream

    private func ask(_ ids: [Int64]) async -> Result<ProductLookup, UpstreamFailure> {
        let result: Result<ProductLookup, UpstreamFailure>
        do throws(UpstreamFailure) { result = .success(try await upstream.lookup(ids)) } catch { result = .failure(error) }
        remember(result)
        return result
    }

    private func remember(_ result: Result<ProductLookup, UpstreamFailure>) {
        guard maxStaleness > .zero, case .success(let lookup) = result else { return }
        let now = ContinuousClock.now
        state.withLock { s in
            for (id, p) in lookup.products { s.cache[id] = (p, now) }
            if s.cache.count > 100_000 { s.cache.removeAll(keepingCapacity: true) }  // bound memory
        }
    }
}

extension CoalescingProductCatalog: ProductCatalog {}

/// The cache-allowed view of a coalescing catalog, for add_item.
public struct RecentProductCatalog: ProductCatalog {
    public let catalog: CoalescingProductCatalog
    public init(_ catalog: CoalescingProductCatalog) { self.catalog = catalog }
    public func lookup(_ productIds: [Int64]) async throws(UpstreamFailure) -> ProductLookup {
        try await catalog.recentLookup(productIds)
    }
}

/// Coalesces product lookups of concurrent requests into one upstream request: ids asked for
/// within `window` of each other (up to `maxIds`) travel together, and every caller gets the
/// part of the answer it asked for. Optionally remembers answers for `maxStaleness` (zero: never),
/// which callers may use only where slightly old details are acceptable (add_item), never for
/// create_order.
public actor CoalescingProductCatalog {
    private let upstream: any ProductCatalog
    private let window: Duration
    private let maxIds: Int
    private let maxStaleness: Duration
    private var open: Batch?
    private var nextBatchId = 0
    private var cache: [Int64: (product: Product, at: ContinuousClock.Instant)] = [:]

    private struct Batch {
        let id: Int
        var ids: Set<Int64> = []
        var waiters: [CheckedContinuation<Result<ProductLookup, UpstreamFailure>, Never>] = []
    }

    public init(upstream: any ProductCatalog, window: Duration = .milliseconds(1), maxIds: Int = 500, maxStaleness: Duration = .zero) {
        self.upstream = upstream
        self.window = window
        self.maxIds = maxIds
        self.maxStaleness = maxStaleness
    }

    /// Current details (no cache).
    public func lookup(_ ids: [Int64]) async throws(UpstreamFailure) -> ProductLookup {
        let result = await withCheckedContinuation { (cont: CheckedContinuation<Result<ProductLookup, UpstreamFailure>, Never>) in
            join(ids, cont)
        }
        let all = try result.get()
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
        for id in ids { if let c = cache[id], now - c.at <= maxStaleness { products[id] = c.product } }
        let missing = ids.filter { products[$0] == nil }
        guard !missing.isEmpty else { return ProductLookup(products: products, notFound: []) }
        let fresh = try await lookup(missing)
        for (id, p) in fresh.products { products[id] = p }
        return ProductLookup(products: products, notFound: fresh.notFound)
    }

    private func join(_ ids: [Int64], _ cont: CheckedContinuation<Result<ProductLookup, UpstreamFailure>, Never>) {
        if let b = open, b.ids.count + ids.count > maxIds { send(b) }
        var batch: Batch
        if let b = open {
            batch = b
            open = nil  // the only reference left: appending below copies nothing
        } else {
            nextBatchId += 1
            let id = nextBatchId
            batch = Batch(id: id)
            Task { [window] in
                try? await Task.sleep(for: window)
                self.flush(id)
            }
        }
        batch.ids.formUnion(ids)
        batch.waiters.append(cont)
        open = batch
    }

    private func flush(_ id: Int) {
        guard let b = open, b.id == id else { return }  // already sent because it filled up
        send(b)
    }

    private func send(_ batch: Batch) {
        open = nil
        let ids = batch.ids.sorted()
        let waiters = batch.waiters
        let upstream = self.upstream
        Task {
            let result: Result<ProductLookup, UpstreamFailure>
            do throws(UpstreamFailure) { result = .success(try await upstream.lookup(ids)) } catch { result = .failure(error) }
            self.remember(result)
            waiters.forEach { $0.resume(returning: result) }
        }
    }

    private func remember(_ result: Result<ProductLookup, UpstreamFailure>) {
        guard maxStaleness > .zero, case .success(let lookup) = result else { return }
        let now = ContinuousClock.now
        for (id, p) in lookup.products { cache[id] = (p, now) }
        if cache.count > 100_000 { cache.removeAll(keepingCapacity: true) }  // bound memory
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

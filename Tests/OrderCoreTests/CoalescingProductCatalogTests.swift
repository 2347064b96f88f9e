import Synchronization
import Testing

@testable import OrderCore

/// A Product Service stand-in: knows ids below 900, records every call's ids, answers each call
/// with prices naming the call (call n prices everything at n.00, so a test can tell a cached
/// answer from a fresh one), and fails the calls a test scripts to fail.
final class CountingCatalog: ProductCatalog {
    private let state = Mutex<(calls: [[Int64]], failing: Set<Int>)>(([], []))
    /// Delay before each answer (so callers arriving meanwhile cannot ride along).
    let delay: Duration

    init(failingCalls: Set<Int> = [], delay: Duration = .zero) {
        state.withLock { $0.failing = failingCalls }
        self.delay = delay
    }

    var calls: [[Int64]] { state.withLock { $0.calls } }

    func lookup(_ ids: [Int64]) async throws(UpstreamFailure) -> ProductLookup {
        let (n, fail) = state.withLock { s -> (Int, Bool) in
            s.calls.append(ids)
            return (s.calls.count, s.failing.contains(s.calls.count))
        }
        if delay > .zero { try? await Task.sleep(for: delay) }
        if fail { throw .timeout(service: "product-call-\(n)") }
        var products: [Int64: Product] = [:]
        for id in ids where id < 900 {
            products[id] = Product(productId: id, name: "p\(id)", price: Money(units: Int64(n))!)
        }
        return ProductLookup(products: products, notFound: ids.filter { products[$0] == nil })
    }
}

@Suite("CoalescingProductCatalog", .timeLimit(.minutes(2)))
struct CoalescingProductCatalogTests {
    /// How a look-up failed (nil: it did not).
    static func failure(_ catalog: CoalescingProductCatalog, _ ids: [Int64]) async -> UpstreamFailure? {
        do {
            _ = try await catalog.lookup(ids)
            return nil
        } catch { return error }
    }

    @Test func idsAskedWithinTheWindowTravelTogetherAsOneSortedUpstreamCall() async throws {
        let upstream = CountingCatalog()
        let catalog = CoalescingProductCatalog(upstream: upstream, window: .seconds(5))
        // Callers 100 ms apart: well within the window (even on a loaded machine), far beyond
        // scheduling noise.
        let a = Task { try await catalog.lookup([3, 1]) }
        try await Task.sleep(for: .milliseconds(100))
        let b = Task { try await catalog.lookup([2, 3]) }
        try await Task.sleep(for: .milliseconds(100))
        let c = Task { try await catalog.lookup([4]) }
        let (ra, rb, rc) = try await (a.value, b.value, c.value)
        #expect(upstream.calls == [[1, 2, 3, 4]], "one upstream call with every distinct id, ascending")
        #expect(Set(ra.products.keys) == [1, 3])
        #expect(Set(rb.products.keys) == [2, 3])
        #expect(Set(rc.products.keys) == [4])

        // The batch left: a later look-up is a call of its own.
        _ = try await catalog.lookup([1])
        #expect(upstream.calls == [[1, 2, 3, 4], [1]])
    }

    @Test func aLookupAfterTheWindowClosedDoesNotJoinTheBatchAlreadySent() async throws {
        // The first call takes a while to answer: the second caller arrives while it is on its
        // way, after its window closed, and must not be answered from it.
        let upstream = CountingCatalog(delay: .milliseconds(500))
        let catalog = CoalescingProductCatalog(upstream: upstream, window: .milliseconds(20))
        let first = Task { try await catalog.lookup([1]) }
        await eventually("the first batch left") { upstream.calls.count == 1 }
        let second = try await catalog.lookup([2])
        #expect(second.products[2] != nil)
        _ = try await first.value
        #expect(upstream.calls == [[1], [2]])
    }

    @Test func noUpstreamCallCarriesMoreThanMaxIdsAndEveryCallerGetsItsPart() async throws {
        // Callers in any order (the order they join is up to the scheduler): whenever the next
        // caller's ids would take the batch past maxIds, the batch leaves without it.
        let upstream = CountingCatalog()
        let catalog = CoalescingProductCatalog(upstream: upstream, window: .seconds(5), maxIds: 3)
        let asks: [[Int64]] = [[1, 2], [3, 4], [5], [6, 7, 8], [2, 9]]
        let answers = try await withThrowingTaskGroup(of: ([Int64], ProductLookup).self) { group in
            for ids in asks { group.addTask { (ids, try await catalog.lookup(ids)) } }
            return try await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
        }
        let calls = upstream.calls
        #expect(calls.allSatisfy { $0.count <= 3 }, "calls: \(calls)")
        #expect(calls.count >= 3, "9 distinct ids, at most 3 per call")
        #expect(Set(calls.joined()) == Set(1...9))
        for ids in asks { #expect(answers[ids].map { Set($0.products.keys) } == Set(ids)) }
    }

    @Test func exactlyMaxIdsStillTravelTogether() async throws {
        let upstream = CountingCatalog()
        let catalog = CoalescingProductCatalog(upstream: upstream, window: .seconds(5), maxIds: 3)
        async let a = catalog.lookup([6])
        async let b = catalog.lookup([7, 8])
        _ = try await (a, b)
        #expect(upstream.calls == [[6, 7, 8]])
    }

    @Test func everyCallerGetsOnlyWhatItAskedWithItsOwnNotFoundInItsOwnOrderWithoutDuplicates() async throws {
        let upstream = CountingCatalog()
        let catalog = CoalescingProductCatalog(upstream: upstream, window: .seconds(1))
        async let a = catalog.lookup([5, 999, 5, 998, 999, 7])
        async let b = catalog.lookup([998, 6, 997])
        async let c = catalog.lookup([8])
        let (ra, rb, rc) = try await (a, b, c)
        #expect(upstream.calls.count == 1)
        #expect(Set(ra.products.keys) == [5, 7])
        #expect(ra.notFound == [999, 998])
        #expect(Set(rb.products.keys) == [6])
        #expect(rb.notFound == [998, 997])
        #expect(Set(rc.products.keys) == [8])
        #expect(rc.notFound == [])
        #expect(ra.products[5]?.name == "p5")
    }

    @Test func anUpstreamFailureReachesEveryWaiterOfItsBatchAndNotTheNextBatch() async throws {
        let upstream = CountingCatalog(failingCalls: [1])
        let catalog = CoalescingProductCatalog(upstream: upstream, window: .seconds(1))
        async let a = Self.failure(catalog, [1])
        async let b = Self.failure(catalog, [2, 3])
        let (ra, rb) = await (a, b)
        #expect(upstream.calls.count == 1)
        #expect(ra == .timeout(service: "product-call-1"))
        #expect(rb == .timeout(service: "product-call-1"))
        let next = try await catalog.lookup([2])
        #expect(next.products[2] != nil, "the next batch is a new call that succeeds")
        #expect(upstream.calls.count == 2)
    }

    @Test func recentLookupUsesTheCacheOnlyWithinMaxStalenessAndLookupNever() async throws {
        let upstream = CountingCatalog()
        let catalog = CoalescingProductCatalog(upstream: upstream, window: .milliseconds(1), maxStaleness: .seconds(4))
        // Call 1 fills the cache (prices 1.00).
        #expect(try await catalog.recentLookup([1]).products[1]?.price == Money(units: 1))
        // Within the staleness: from the cache, no upstream call; a missing id is asked alone.
        let cached = try await catalog.recentLookup([1, 2, 950])
        #expect(cached.products[1]?.price == Money(units: 1))
        #expect(cached.products[2]?.price == Money(units: 2))
        #expect(cached.notFound == [950])
        #expect(upstream.calls == [[1], [2, 950]])
        // lookup never uses the cache.
        #expect(try await catalog.lookup([1]).products[1]?.price == Money(units: 3))
        #expect(upstream.calls.count == 3)
        // Past the staleness: asked again.
        try await Task.sleep(for: .milliseconds(4_500))
        #expect(try await catalog.recentLookup([1]).products[1]?.price == Money(units: 4))
        #expect(upstream.calls.count == 4)
    }

    @Test func withoutStalenessRecentLookupAlwaysAsksUpstream() async throws {
        let upstream = CountingCatalog()
        let catalog = CoalescingProductCatalog(upstream: upstream, window: .milliseconds(1))
        _ = try await catalog.recentLookup([1])
        _ = try await RecentProductCatalog(catalog).lookup([1])
        #expect(upstream.calls == [[1], [1]])
    }

    @Test func aFailedAnswerIsNotCached() async throws {
        let upstream = CountingCatalog(failingCalls: [1])
        let catalog = CoalescingProductCatalog(upstream: upstream, window: .milliseconds(1), maxStaleness: .seconds(60))
        await #expect(throws: UpstreamFailure.self) { try await catalog.recentLookup([1]) }
        #expect(try await catalog.recentLookup([1]).products[1] != nil)
        #expect(upstream.calls.count == 2)
    }

    // MARK: Gathering by requests in flight (window zero, the default)

    @Test func withoutAWindowALoneLookupLeavesAtOnceWithItsIdsDistinctAndSorted() async throws {
        let upstream = CountingCatalog()
        let catalog = CoalescingProductCatalog(upstream: upstream)
        let r = try await catalog.lookup([3, 1, 3, 950])
        #expect(upstream.calls == [[1, 3, 950]])
        #expect(Set(r.products.keys) == [1, 3])
        #expect(r.notFound == [950])
    }

    @Test func lookupsArrivingWhileTheLimitIsOnItsWayRideTogetherWithTheNextRequest() async throws {
        // 1 s calls: the later callers must all queue before the first call returns, also when
        // a busy pool (the whole suite in parallel) starts their tasks late.
        let upstream = CountingCatalog(delay: .seconds(1))
        let catalog = CoalescingProductCatalog(upstream: upstream, maxInFlight: 1)
        let first = Task { try await catalog.lookup([9]) }
        await eventually("the first request left") { upstream.calls.count == 1 }
        let others = [[4, 2], [3], [2, 5]].map { ids in Task { (ids, try await catalog.lookup(ids)) } }
        try await Task.sleep(for: .milliseconds(100))
        #expect(upstream.calls == [[9]], "nothing else leaves while the one allowed request is on its way")
        _ = try await first.value
        for t in others {
            let (ids, r) = try await t.value
            #expect(Set(r.products.keys) == Set(ids))
            #expect(r.products.values.allSatisfy { $0.price == Money(units: 2) }, "answered by the second call")
        }
        #expect(upstream.calls == [[9], [2, 3, 4, 5]])
    }

    @Test func batchesWaitingForTheLimitHoldAtMostMaxIdsAndLeaveInOrder() async throws {
        // Each call takes 1 s, so `c` joins `b`'s batch even when a busy pool (the whole suite in
        // parallel) starts its task a second late; 100 ms apart keeps the callers in order.
        let upstream = CountingCatalog(delay: .seconds(1))
        let catalog = CoalescingProductCatalog(upstream: upstream, maxIds: 3, maxInFlight: 1)
        let first = Task { try await catalog.lookup([0]) }
        await eventually("the first request left") { upstream.calls.count == 1 }
        let a = Task { try await catalog.lookup([1, 2]) }
        try await Task.sleep(for: .milliseconds(100))
        let b = Task { try await catalog.lookup([3, 4]) }
        try await Task.sleep(for: .milliseconds(100))
        let c = Task { try await catalog.lookup([5]) }
        _ = try await (first.value, a.value, b.value, c.value)
        #expect(upstream.calls == [[0], [1, 2], [3, 4, 5]])
    }

    @Test func withoutAWindowAFailureReachesItsBatchOnlyAndTheLimitIsGivenBack() async throws {
        // 1 s calls, so that `a` and `b` both queue behind the first even on a busy pool.
        let upstream = CountingCatalog(failingCalls: [2], delay: .seconds(1))
        let catalog = CoalescingProductCatalog(upstream: upstream, maxInFlight: 1)
        let first = Task { try await catalog.lookup([1]) }
        await eventually("the first request left") { upstream.calls.count == 1 }
        async let a = Self.failure(catalog, [2])
        async let b = Self.failure(catalog, [3])
        _ = try await first.value
        let (ra, rb) = await (a, b)
        #expect(ra == .timeout(service: "product-call-2"))
        #expect(rb == .timeout(service: "product-call-2"))
        #expect(try await catalog.lookup([4]).products[4] != nil, "the limit is free again")
        #expect(upstream.calls.count == 3)
    }
}

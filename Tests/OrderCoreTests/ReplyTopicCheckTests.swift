import Synchronization
import Testing

@testable import OrderCore

@Suite("Reply-to topics: existence check and dangerous allow-lists", .timeLimit(.minutes(1)))
struct ReplyTopicCheckTests {
    final class FakeCluster: Sendable {
        let topics = Mutex<Set<String>>([])
        let asked = Atomic<Int>(0)
        let failing = Atomic<Bool>(false)
        func names() throws -> [String: Int32] {
            asked.add(1, ordering: .relaxed)
            if failing.load(ordering: .relaxed) { throw ConfigurationError("broker down") }
            return Dictionary(uniqueKeysWithValues: topics.withLock { $0 }.map { ($0, 3) })
        }
    }

    @Test func existingTopicsAreTrustedAndMissingOnesRecheckedAtMostOncePerInterval() async throws {
        let cluster = FakeCluster()
        cluster.topics.withLock { $0 = ["client-a"] }
        let check = ReplyTopicCheck(trustFor: .seconds(60), refreshAtMost: .seconds(3600)) { try cluster.names() }
        #expect(await check.exists("client-a"))
        #expect(await !check.exists("client-b"))
        // A flood of unknown names within the interval costs no more metadata requests.
        for i in 0..<1_000 { _ = await check.exists("client-x\(i)") }
        #expect(cluster.asked.load(ordering: .relaxed) == 1)
        #expect(await check.exists("client-a"), "a topic seen is trusted without asking")
        #expect(cluster.asked.load(ordering: .relaxed) == 1)
    }

    @Test func aTopicCreatedLaterIsFoundAfterTheInterval() async throws {
        let cluster = FakeCluster()
        let check = ReplyTopicCheck(trustFor: .seconds(60), refreshAtMost: .milliseconds(20)) { try cluster.names() }
        #expect(await !check.exists("client-late"))
        cluster.topics.withLock { $0.insert("client-late") }
        try await Task.sleep(for: .milliseconds(50))
        #expect(await check.exists("client-late"))
    }

    @Test func partitionCountsComeFromTheMetadata() async {
        let cluster = FakeCluster()
        cluster.topics.withLock { $0 = ["client-a"] }
        let check = ReplyTopicCheck { try cluster.names() }
        #expect(await check.lookup("client-a") == .exists(partitions: 3))
        #expect(await check.lookup("client-b") == .missing)
    }

    @Test func unreadableMetadataAssumesTheTopicExists() async {
        let cluster = FakeCluster()
        cluster.failing.store(true, ordering: .relaxed)
        let check = ReplyTopicCheck { try cluster.names() }
        #expect(await check.exists("client-a"), "broker trouble is waited out by the send's retries, not answered as invalid_reply_to")
    }

    @Test func allowListEntriesMatchingOwnNonResponseTopicsAreFound() throws {
        let topics = Fixture.topics()
        let found = ReplyRouting.dangerousAllowListEntries(["client-*", "cart_*", "order_service_dlq", "cart_responses", "inventory*"], topics: topics)
        let pairs = Set(found.map { "\($0.entry) → \($0.topic)" })
        #expect(pairs.contains("cart_* → cart_requests"))
        #expect(pairs.contains("order_service_dlq → order_service_dlq"))
        #expect(pairs.contains("inventory* → inventory_check"))
        #expect(!pairs.contains { $0.hasPrefix("client-*") })
        #expect(!pairs.contains { $0.hasSuffix("→ cart_responses") }, "response topics are what reply-to is for")
    }
}

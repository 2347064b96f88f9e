import Kafka
import Testing

@testable import OrderCore

@Suite("Request topic retention vs idempotency retention")
struct RetentionCheckTests {
    typealias R = RetentionCheck.Retention

    @Test func readsRetentionValues() {
        #expect(R(configValue: "604800000") == .finite(milliseconds: 604_800_000))
        #expect(R(configValue: "-1") == .infinite)
        #expect(R(configValue: "0") == .finite(milliseconds: 0))
        if case .unknown = R(configValue: nil) {} else { Issue.record("nil must be unknown") }
        if case .unknown = R(configValue: "7d") {} else { Issue.record("a non-number must be unknown") }
    }

    @Test func retentionWithinTheIdempotencyRetentionIsFine() {
        // 168 h is exactly the default 604800000 ms: equal is allowed.
        #expect(RetentionCheck.findings(["cart": .finite(milliseconds: 604_800_000), "order": .finite(milliseconds: 1)], idempotencyRetentionHours: 168).isEmpty)
    }

    @Test func longerOrInfiniteRetentionIsAReplayRisk() {
        let f = RetentionCheck.findings(
            ["cart": .finite(milliseconds: 604_800_001), "order": .infinite, "admin": .finite(milliseconds: 3_600_000)],
            idempotencyRetentionHours: 168)
        let expected: [RetentionCheck.Finding] = [
            .keptLongerThanReplies(topic: "cart", retention: .finite(milliseconds: 604_800_001), idempotencyRetentionHours: 168),
            .keptLongerThanReplies(topic: "order", retention: .infinite, idempotencyRetentionHours: 168),
        ]
        #expect(f == expected)
        #expect(f.allSatisfy { $0.isReplayRisk })
        // The message names both values and what to change.
        #expect(f[0].message.contains("604800001 ms") && f[0].message.contains("168 h"))
        #expect(f[0].message.contains("at least 169"))
        #expect(f[1].message.contains("infinite") && f[1].message.contains("604800000"))
    }

    @Test func extremeRetentionsAndHoursGiveMessagesNotCrashes() {
        // Long.MAX_VALUE is a common "keep forever" retention.ms; hours come from the environment.
        let keptForever = R(configValue: String(Int64.max))
        #expect(keptForever == .finite(milliseconds: .max))
        let f = RetentionCheck.findings(["cart": keptForever], idempotencyRetentionHours: 168)
        #expect(f.count == 1 && f[0].isReplayRisk)
        #expect(f[0].message.contains("at least \(Int64.max / 3_600_000 + 1)"))
        #expect(RetentionCheck.findings(["cart": keptForever, "order": .infinite], idempotencyRetentionHours: .max).map(\.message).count == 1)
        #expect(RetentionCheck.findings(["cart": .finite(milliseconds: 1)], idempotencyRetentionHours: .max).isEmpty)
    }

    @Test func shorterIdempotencyRetentionFlagsTheDefaultTopics() {
        let f = RetentionCheck.findings(["cart": .finite(milliseconds: 604_800_000)], idempotencyRetentionHours: 24)
        #expect(f.count == 1 && f[0].isReplayRisk)
        #expect(f[0].message.contains("at least 168") && f[0].message.contains("at most 86400000"))
    }

    @Test func unknownRetentionIsReportedNotARisk() {
        let f = RetentionCheck.findings(["admin": .unknown(reason: "the broker reports no retention.ms for it")], idempotencyRetentionHours: 168)
        let expected: [RetentionCheck.Finding] = [.unreadable(topic: "admin", reason: "the broker reports no retention.ms for it")]
        #expect(f == expected)
        #expect(!f[0].isReplayRisk)
    }

    @Test func retentionsFromADescribeConfigsAnswer() {
        let described: [String: KafkaAdmin.ConfigsOutcome] = [
            "a": .configs(["retention.ms": "1000", "cleanup.policy": "delete"]), "b": .configs([:]),
            "c": .failed(KafkaError(code: 3, message: "UNKNOWN_TOPIC_OR_PART")),
        ]
        let r = RetentionCheck.retentions(of: ["a", "b", "c", "d"], described: described)
        #expect(r["a"] == .finite(milliseconds: 1_000))
        for t in ["b", "c", "d"] { if case .unknown = r[t] {} else { Issue.record("\(t) must be unknown: \(String(describing: r[t]))") } }
        let failed = RetentionCheck.retentions(of: ["a"], described: nil, failure: "DescribeConfigs failed: timed out")
        #expect(failed["a"] == .unknown(reason: "DescribeConfigs failed: timed out"))
    }
}

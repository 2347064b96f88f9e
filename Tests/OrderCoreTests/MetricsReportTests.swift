import Testing

@testable import OrderCore

/// The metrics report: latency percentiles (nearest rank) and consumer lag read from
/// librdkafka's statistics.
@Suite("Metrics: percentiles and consumer lag", .timeLimit(.minutes(2)))
struct MetricsReportTests {
    static func latency(_ report: JSON, _ name: String) -> JSON? { report["latency_ms"]?[name] }

    func report(latenciesMs: [Int]) -> JSON {
        let m = ServiceMetrics()
        for ms in latenciesMs.shuffled() { m.record(action: "get_cart", outcome: "ok", latency: .milliseconds(ms)) }
        return m.report(instance: "i1", inFlight: 3)
    }

    @Test func percentilesOfAHundredKnownLatenciesAreTheNearestRank() {
        let r = report(latenciesMs: Array(1...100))
        #expect(Self.latency(r, "p50") == .number("50.00"))
        #expect(Self.latency(r, "p95") == .number("95.00"))
        #expect(Self.latency(r, "p99") == .number("99.00"))
        #expect(Self.latency(r, "max") == .number("100.00"))
        #expect(r["requests"]?["get_cart/ok"] == .int(100))
        #expect(r["in_flight"] == .int(3))
    }

    @Test func percentilesOfFewSamples() {
        let two = report(latenciesMs: [10, 1000])
        #expect(Self.latency(two, "p50") == .number("10.00"), "the median of two samples is the lower, not the maximum")
        #expect(Self.latency(two, "p99") == .number("1000.00"))
        let one = report(latenciesMs: [7])
        for name in ["p50", "p95", "p99", "max"] { #expect(Self.latency(one, name) == .number("7.00")) }
        let thousand = report(latenciesMs: Array(1...1000))
        #expect(Self.latency(thousand, "p50") == .number("500.00"))
        #expect(Self.latency(thousand, "p99") == .number("990.00"))
    }

    @Test func subMillisecondLatenciesKeepTheirFraction() {
        let m = ServiceMetrics()
        m.record(action: "get_cart", outcome: "ok", latency: .microseconds(1_250))
        #expect(Self.latency(m.report(instance: "i", inFlight: 0), "p50") == .number("1.25"))
    }

    @Test func noSamplesGiveNullPercentilesAndEachReportStartsANewWindow() {
        let m = ServiceMetrics()
        let empty = m.report(instance: "i", inFlight: 0)
        for name in ["p50", "p95", "p99", "max"] { #expect(Self.latency(empty, name) == .null) }
        #expect(empty["requests"] == .object([]))
        #expect(empty["dead_letters"] == .int(0))
        m.record(action: "add_item", outcome: "ok", latency: .milliseconds(5))
        m.deadLettered(2)
        let first = m.report(instance: "i", inFlight: 0)
        #expect(first["dead_letters"] == .int(2))
        #expect(Self.latency(first, "p50") == .number("5.00"))
        let second = m.report(instance: "i", inFlight: 0)
        #expect(Self.latency(second, "p50") == .null, "the window's samples went with its report")
        #expect(second["dead_letters"] == .int(0))
    }

    static let statistics = """
        {"name":"c#consumer-1","type":"consumer","topics":{
          "cart_requests":{"topic":"cart_requests","partitions":{
            "0":{"partition":0,"consumer_lag":12,"hi_offset":40},
            "1":{"partition":1,"consumer_lag":0},
            "2":{"partition":2,"consumer_lag":-1},
            "-1":{"partition":-1,"consumer_lag":99}}},
          "order_requests":{"topic":"order_requests","partitions":{
            "3":{"partition":3,"consumer_lag":7}}},
          "odd":{"topic":"odd"}}}
        """

    @Test func consumerLagIsReadPerPartitionLeavingOutUnknownLagAndTheInternalPartition() {
        let m = ServiceMetrics()
        m.update(statistics: Self.statistics)
        let lag = m.report(instance: "i", inFlight: 0)["consumer_lag"]
        #expect(lag == .object([("cart_requests[0]", .int(12)), ("cart_requests[1]", .int(0)), ("order_requests[3]", .int(7))]))
        // Lag is a gauge: it stays until the next statistics replace it.
        #expect(m.report(instance: "i", inFlight: 0)["consumer_lag"] == lag)
        m.update(statistics: #"{"topics":{"cart_requests":{"partitions":{"1":{"consumer_lag":5}}}}}"#)
        #expect(m.report(instance: "i", inFlight: 0)["consumer_lag"] == .object([("cart_requests[1]", .int(5))]))
    }

    @Test func statisticsThatAreNotUsableLeaveTheLastLagAlone() {
        let m = ServiceMetrics()
        m.update(statistics: Self.statistics)
        let before = m.report(instance: "i", inFlight: 0)["consumer_lag"]
        m.update(statistics: "not json")
        m.update(statistics: #"{"type":"producer"}"#)
        #expect(m.report(instance: "i", inFlight: 0)["consumer_lag"] == before)
    }
}

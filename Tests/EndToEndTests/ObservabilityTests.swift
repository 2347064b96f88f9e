import Foundation
import Kafka
import OrderCore
import Testing
import TestSupport

extension EndToEndTests {
    @Test("observability: traceparent propagated to the reply, upstream requests, deduction and notifications; metrics records on the metrics topic")
    func observability() async throws {
        try await withSystem("observe", environment: ["ORDER_SERVICE_METRICS_INTERVAL_MS": "1000"]) { system in
            let trace = "4bf92f3577b34da6a3ce929d0e0e4736"
            let parent = "00-\(trace)-00f067aa0ba902b7-01"
            let user = TestCatalog.uniqueUserId()
            let product = TestCatalog.uniqueProductId()
            try await TestCatalog.add(product, price: "3.00")

            let rec = try await system.requestRecord(
                "cart_requests", value: add(user, product, 1).bytes, key: String(user), headers: [KafkaHeader("traceparent", parent)])
            #expect(rec.header("traceparent")?.stringValue == parent)
            let lookup = try await system.waitFor { r in
                r.topic == system.topics.productRequests && r.header("traceparent")?.stringValue?.contains(trace) == true
            }
            let child = try #require(lookup.header("traceparent")?.stringValue)
            #expect(TraceContext.isValid(child))
            #expect(child != parent)  // a child span: same trace, new parent id

            _ = try await system.requestRecord(
                "order_requests", value: JSON.object([("action", "create_order"), ("user_id", .int(user))]).bytes, key: String(user),
                headers: [KafkaHeader("traceparent", parent)])
            _ = try await system.waitFor { r in
                r.topic == system.topics.deductionRequests && r.header("traceparent")?.stringValue?.contains(trace) == true
            }
            _ = try await system.waitFor { r in
                r.topic == system.topics.notifications && r.header("traceparent")?.stringValue?.contains(trace) == true
            }

            // Metrics: a record per second with counts by action and outcome. Summed over the
            // windows they match what this test sent: one add_item, one create_order, and the
            // reference inventory's one deduction result; besides, only waitUntilServing's get_carts.
            let metricsTopic = try #require(system.topics.metricsTopic)
            let expected: [String: Int64] = ["add_item/ok": 1, "create_order/ok": 1]
            do {
                try await TestKafka.eventually("metrics to count the requests sent", timeout: .seconds(30)) {
                    let totals = metricsTotals(system)
                    return expected.allSatisfy { totals[$0.key] == $0.value } && deductionResults(totals) == 1
                }
            } catch {
                Issue.record("\(error); counted: \(metricsTotals(system))")
            }
            let totals = metricsTotals(system)
            for (key, count) in expected { #expect(totals[key] == count, "\(key): \(totals)") }
            #expect(deductionResults(totals) == 1, "\(totals)")
            #expect((totals["get_cart/ok"] ?? 0) >= 1, "waitUntilServing's get_cart: \(totals)")
            let others = totals.keys.filter { !expected.keys.contains($0) && $0 != "get_cart/ok" && !$0.hasPrefix("deduction_result/") }
            #expect(others.isEmpty, "unexpected requests: \(totals)")

            let reports = metricsReports(system)
            #expect(!reports.isEmpty)
            for record in system.records(on: metricsTopic) {
                let report = try JSON.parse(record.value ?? [])
                #expect(report["event"] == "order_service_metrics")
                let instance = try #require(report["instance"]?.string)
                #expect(!instance.isEmpty && record.key == Array(instance.utf8))
                #expect(report["at"]?.string?.isEmpty == false)
                let window = try #require(decimal(report["window_seconds"]))
                #expect(window >= 0 && window < 60, "window of \(window) s with a 1 s interval")
                #expect(report["dead_letters"]?.int == 0)
                let inFlight = try #require(report["in_flight"]?.int)
                #expect(inFlight >= 0 && inFlight <= 2_000)
                guard case .object(let lag)? = report["consumer_lag"] else {
                    Issue.record("consumer_lag is not an object: \(report.text)")
                    continue
                }
                #expect(lag.allSatisfy { ($0.1.int ?? -1) >= 0 }, "\(report.text)")
                // Latency percentiles: absent (null) in a window without requests, else plausible
                // and ordered. Any request takes more than 0 ms and, here, less than a reply timeout.
                let latency = try #require(report["latency_ms"])
                let counted = { () -> Int64 in
                    guard case .object(let r)? = report["requests"] else { return 0 }
                    return r.reduce(0) { $0 + ($1.1.int ?? 0) }
                }()
                let quantiles = ["p50", "p95", "p99", "max"].map { decimal(latency[$0]) }
                if counted == 0 {
                    #expect(quantiles.allSatisfy { $0 == nil }, "\(report.text)")
                } else {
                    let q = quantiles.compactMap { $0 }
                    #expect(q.count == 4, "\(report.text)")
                    #expect(q == q.sorted(), "p50 ≤ p95 ≤ p99 ≤ max: \(report.text)")
                    #expect(q.allSatisfy { $0 >= 0 && $0 < 20_000 }, "\(report.text)")
                    #expect((q.last ?? 0) > 0, "\(report.text)")
                }
            }
        }
    }
}

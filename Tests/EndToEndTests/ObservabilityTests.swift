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

            // Metrics: a record per second with counts by action and outcome.
            let metricsTopic = try #require(system.topics.metricsTopic)
            let m = try await system.waitFor(timeout: .seconds(20)) { r in
                r.topic == metricsTopic && ((try? JSON.parse(r.value ?? []))?["requests"]?["add_item/ok"]) != nil
            }
            let report = try JSON.parse(m.value!)
            #expect(report["event"] == "order_service_metrics")
            #expect(report["latency_ms"]?["p99"] != nil)
            #expect(report["in_flight"] != nil)
            #expect(report["consumer_lag"] != nil)
        }
    }
}

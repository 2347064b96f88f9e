import Foundation
import Kafka
import OrderCore
import Testing
import TestSupport

extension EndToEndTests {
    /// The spans of one trace, once `done` holds for them (exports arrive in batches).
    private func spans(
        _ receiver: OTLPReceiver, trace: String, _ what: String, _ done: @escaping @Sendable ([ExportedSpan]) -> Bool
    ) async throws -> [ExportedSpan] {
        do {
            try await TestKafka.eventually(what, timeout: .seconds(30)) { done(receiver.spans.filter { $0.traceId == trace }) }
        } catch {
            Issue.record("\(error); spans of the trace:\n\(receiver.spans.filter { $0.traceId == trace }.map(\.description).joined(separator: "\n"))")
        }
        return receiver.spans.filter { $0.traceId == trace }
    }

    @Test("OpenTelemetry: a request's consumer, upstream, database and producer spans arrive in its trace with their parents; metrics arrive; a receiver that goes away disturbs nothing")
    func openTelemetryExport() async throws {
        let receiver = try await OTLPReceiver.start()
        let env = [
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_METRIC_EXPORT_INTERVAL": "500",
            "ORDER_SERVICE_METRICS_INTERVAL_MS": "1000",
        ]
        try await withSystem("otel", environment: env) { system in
            let trace = "5bf92f3577b34da6a3ce929d0e0e4737"
            let incoming = "10f067aa0ba902b7"
            let parent = "00-\(trace)-\(incoming)-01"
            let user = TestCatalog.uniqueUserId()
            let product = TestCatalog.uniqueProductId()
            try await TestCatalog.add(product, price: "3.00")
            let cartTopic = system.topics.name("cart_requests")

            // add_item: consumer span continuing the traceparent; product lookup (client) → its
            // producer span → the product service's consumer span; the batch; the reply's producer span.
            let reply = try await system.requestRecord(
                "cart_requests", value: add(user, product, 1).bytes, key: String(user), headers: [KafkaHeader("traceparent", parent)])
            let replyTrace = try #require(reply.header("traceparent")?.stringValue)
            #expect(replyTrace.hasPrefix("00-\(trace)-") && replyTrace != parent, "the reply names its producer span: \(replyTrace)")
            let replySpanId = String(replyTrace.split(separator: "-")[2])
            let addSpans = try await spans(receiver, trace: trace, "add_item's spans") { s in
                s.contains { $0.spanId == replySpanId } && s.contains { $0.name == "process \(system.topics.productRequests)" }
                    && s.contains { $0.name == "send \(system.topics.productReplies)" }
            }
            let consumer = try #require(addSpans.first { $0.name == "process \(cartTopic)" && $0.parentSpanId == incoming }, "\(addSpans)")
            #expect(consumer.kind == .consumer)
            #expect(consumer.resource["service.name"] == "order-service")
            #expect(consumer.attributes["messaging.system"] == "kafka")
            #expect(consumer.attributes["messaging.destination.name"] == cartTopic)
            #expect(consumer.attributes["messaging.consumer.group.name"] == system.groupId)
            #expect(consumer.attributes["messaging.kafka.message.key"] == String(user))
            #expect(consumer.attributes["messaging.destination.partition.id"] != nil)
            #expect(consumer.attributes["messaging.kafka.offset"] != nil)
            #expect(consumer.attributes["order_service.action"] == "add_item")
            #expect(consumer.attributes["order_service.outcome"] == "ok")
            let replySpan = try #require(addSpans.first { $0.spanId == replySpanId })
            #expect(replySpan.kind == .producer && replySpan.parentSpanId == consumer.spanId, "\(replySpan)")
            #expect(replySpan.name == "send \(reply.topic)")
            let lookup = try #require(addSpans.first { $0.name == "product request" }, "\(addSpans)")
            #expect(lookup.kind == .client && lookup.parentSpanId == consumer.spanId)
            let lookupSend = try #require(addSpans.first { $0.name == "send \(system.topics.productRequests)" })
            #expect(lookupSend.kind == .producer && lookupSend.parentSpanId == lookup.spanId)
            let upstream = try #require(addSpans.first { $0.name == "process \(system.topics.productRequests)" })
            #expect(upstream.parentSpanId == lookupSend.spanId && upstream.resource["service.name"] == "product-service")
            // The product service's reply continues the trace, and the lookup links to it.
            let upstreamReply = try #require(addSpans.first { $0.name == "send \(system.topics.productReplies)" })
            #expect(upstreamReply.parentSpanId == upstream.spanId)
            #expect(lookup.links.contains { $0.spanId == upstreamReply.spanId }, "\(lookup.links)")
            // The cart batch: a child of the request it served alone, or linked to it.
            let batch = try await spans(receiver, trace: trace, "the cart batch") { s in s.contains { $0.name == "cart batch" } }
                .first { $0.name == "cart batch" }
                ?? receiver.spans.first { $0.name == "cart batch" && $0.links.contains { $0.spanId == consumer.spanId } }
            let b = try #require(batch, "no cart batch span for the request")
            #expect(b.parentSpanId == consumer.spanId || b.links.contains { $0.spanId == consumer.spanId })
            #expect(b.attributes["db.system.name"] == "postgresql")

            // create_order: the transaction is a child of the consumer span; the deduction request's
            // and the notification's producer spans descend from it (the context stored in the outbox).
            let orderTopic = system.topics.name("order_requests")
            _ = try await system.requestRecord(
                "order_requests", value: JSON.object([("action", "create_order"), ("user_id", .int(user))]).bytes, key: String(user),
                headers: [KafkaHeader("traceparent", parent)])
            let notification = try await system.waitFor { r in
                r.topic == system.topics.notifications && r.header("traceparent")?.stringValue?.contains(trace) == true
            }
            let notificationSpanId = String(try #require(notification.header("traceparent")?.stringValue).split(separator: "-")[2])
            let orderSpans = try await spans(receiver, trace: trace, "create_order's spans") { s in
                s.contains { $0.spanId == notificationSpanId } && s.contains { $0.name == "send \(system.topics.deductionRequests)" }
                    && s.contains { $0.name == "inventory request" }
            }
            let orderConsumer = try #require(orderSpans.first { $0.name == "process \(orderTopic)" })
            #expect(orderConsumer.attributes["order_service.action"] == "create_order")
            let transaction = try #require(orderSpans.first { $0.name == "transaction" })
            #expect(transaction.parentSpanId == orderConsumer.spanId && transaction.attributes["db.system.name"] == "postgresql")
            let inventory = try #require(orderSpans.first { $0.name == "inventory request" })
            #expect(inventory.parentSpanId == orderConsumer.spanId)
            let deduction = try #require(orderSpans.first { $0.name == "send \(system.topics.deductionRequests)" })
            #expect(deduction.parentSpanId == transaction.spanId, "\(deduction)")
            let notificationSpan = try #require(orderSpans.first { $0.spanId == notificationSpanId })
            #expect(notificationSpan.kind == .producer && notificationSpan.parentSpanId == transaction.spanId)

            // An error outcome marks the consumer span.
            _ = try await system.requestRecord(
                "cart_requests", value: add(user, TestCatalog.uniqueProductId(), 1).bytes, key: String(user),
                headers: [KafkaHeader("traceparent", "00-6bf92f3577b34da6a3ce929d0e0e4738-\(incoming)-01")])
            let failed = try await spans(receiver, trace: "6bf92f3577b34da6a3ce929d0e0e4738", "the failed request's span") { s in
                s.contains { $0.name == "process \(cartTopic)" }
            }.first { $0.name == "process \(cartTopic)" }
            let f = try #require(failed)
            #expect(f.statusCode == 2 && f.attributes["error.type"] == "product_not_found", "\(f)")

            // Metrics by their convention names.
            try await TestKafka.eventually("metrics exported", timeout: .seconds(30)) {
                let names = Set(receiver.metrics.map(\.name))
                return names.contains("messaging.process.duration") && names.contains("messaging.client.consumed.messages")
                    && names.contains("order_service.upstream.duration") && names.contains("order_service.db.batch.size")
            }
            #expect(receiver.metrics.first { $0.name == "messaging.process.duration" }?.unit == "s")

            // The collector goes away: requests are answered as before (5 requests take about as
            // long as 5 did before; the margin is for a loaded machine).
            func fiveRequests() async throws -> Duration {
                let started = ContinuousClock.now
                for _ in 0..<5 {
                    let r = try await system.request("cart_requests", add(user, product, 1), timeout: .seconds(10))
                    #expect(r["status"] == "ok")
                }
                return ContinuousClock.now - started
            }
            let before = try await fiveRequests()
            await receiver.stop()
            let after = try await fiveRequests()
            #expect(after < before + .seconds(15), "5 requests took \(before) with the receiver, \(after) without")
        }
    }
}

extension EndToEndTests {
    /// An add_item carrying `trace` that times out at the Product Service (none runs), with tracing
    /// on and `extra` in the service's environment: `check` gets the trace's spans (once its
    /// `product request` and `process` spans arrived) and the service's log.
    private func timedOutTracedAddItem(
        _ name: String, trace: String, environment extra: [String: String] = [:], _ check: @escaping ([ExportedSpan], String) throws -> Void
    ) async throws {
        let receiver = try await OTLPReceiver.start()
        let env = ["OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200", "ORDER_SERVICE_UPSTREAM_TIMEOUT_MS": "500"]
            .merging(extra) { _, new in new }
        try await withSystem(name, product: false, environment: env) { system in
            let reply = try await system.request(
                "cart_requests", add(TestCatalog.uniqueUserId(), TestCatalog.uniqueProductId(), 1),
                headers: [KafkaHeader("traceparent", "00-\(trace)-20f067aa0ba902b7-01")])
            expectError(reply, "upstream_timeout")
            let spans = try await spans(receiver, trace: trace, "the timed-out request's spans") { s in
                s.contains { $0.name == "product request" } && s.contains { $0.name.hasPrefix("process ") }
            }
            try check(spans, try #require(system.process("order-service")).log)
        }
    }

    @Test("OpenTelemetry: a log line written inside a span carries its trace_id and span_id; an upstream timeout marks the spans")
    func openTelemetryLogCorrelation() async throws {
        let trace = "7bf92f3577b34da6a3ce929d0e0e4739"
        try await timedOutTracedAddItem("otellog", trace: trace) { spans, log in
            let lookup = try #require(spans.first { $0.name == "product request" })
            #expect(lookup.statusCode == 2)
            let consumer = try #require(spans.first { $0.name.hasPrefix("process ") })
            #expect(consumer.attributes["error.type"] == "upstream_timeout" && consumer.statusCode == 2)
            let line = log.split(separator: "\n").first { $0.contains("request timed out") && $0.contains(#""trace_id":"\#(trace)""#) }
            #expect(line?.contains(#""span_id":"\#(lookup.spanId)""#) == true, "\(log.suffix(3000))")
        }
    }

    @Test("OpenTelemetry: plain text log lines (LOG_FORMAT=text) carry trace_id and span_id too")
    func openTelemetryTextLogCorrelation() async throws {
        let trace = "5bf92f3577b34da6a3ce929d0e0e4731"
        try await timedOutTracedAddItem("oteltext", trace: trace, environment: ["LOG_FORMAT": "text"]) { spans, log in
            let lookup = try #require(spans.first { $0.name == "product request" })
            let line = log.split(separator: "\n").first { $0.contains("request timed out") && $0.contains("trace_id=\(trace)") }
            #expect(line?.contains("span_id=\(lookup.spanId)") == true, "\(log.suffix(3000))")
            #expect(line?.hasPrefix("{") == false, "a plain text line")
        }
    }
}

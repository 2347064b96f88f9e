import Instrumentation
import Kafka
import ServiceContextModule
import Tracing

/// Producer spans (`send <topic>`) around record sends. A record gets one when the current
/// context names a span (a reply, dead letter or upstream request) or, failing that, when its own
/// `traceparent` header does (outbox records, whose context was stored with them); its
/// `traceparent` header is then the producer span's own. Records of neither kind (metrics
/// records) are sent as they are.
public enum ProducerSpans {
    public static func sendAll(
        _ records: [KafkaOutgoingRecord], _ send: ([KafkaOutgoingRecord]) async throws -> [DeliveryReport],
        isolation: isolated (any Actor)? = #isolation
    ) async throws -> [DeliveryReport] {
        guard Telemetry.isTracing else { return try await send(records) }
        var traced = records
        var spans: [(any Span)?] = []
        for i in traced.indices { spans.append(start(&traced[i])) }
        do {
            let reports = try await send(traced)
            for (span, report) in zip(spans, reports) { span.map { end($0, Result<DeliveryReport, any Error>.success(report)) } }
            return reports
        } catch {
            for span in spans { span.map { end($0, Result<DeliveryReport, any Error>.failure(error)) } }
            throw error
        }
    }

    /// `sendAll` for a send that reports each record's outcome: each span ends with its own.
    public static func sendEach(
        _ records: [KafkaOutgoingRecord], _ send: ([KafkaOutgoingRecord]) async -> [Result<DeliveryReport, KafkaError>],
        isolation: isolated (any Actor)? = #isolation
    ) async -> [Result<DeliveryReport, KafkaError>] {
        guard Telemetry.isTracing else { return await send(records) }
        var traced = records
        var spans: [(any Span)?] = []
        for i in traced.indices { spans.append(start(&traced[i])) }
        let results = await send(traced)
        for (span, result) in zip(spans, results) { span.map { end($0, result) } }
        return results
    }

    /// Ends a send's span with the record's outcome.
    private static func end<Failure: Error>(_ span: any Span, _ result: Result<DeliveryReport, Failure>) {
        switch result {
        case .success(let report):
            span.attributes["messaging.destination.partition.id"] = "\(report.partition)"
            span.attributes["messaging.kafka.offset"] = Int(report.offset)
        case .failure(let error):
            span.recordError(error)
            span.attributes["error.type"] = String(reflecting: type(of: error))
            span.setStatus(SpanStatus(code: .error, message: "\(error)"))
        }
        span.end()
    }

    public static func send(
        _ record: KafkaOutgoingRecord, _ send: (KafkaOutgoingRecord) async throws -> DeliveryReport,
        isolation: isolated (any Actor)? = #isolation
    ) async throws -> DeliveryReport {
        guard Telemetry.isTracing else { return try await send(record) }
        let reports = try await sendAll([record]) { records in
            var out: [DeliveryReport] = []
            for r in records { out.append(try await send(r)) }
            return out
        }
        guard let report = reports.first else { throw KafkaError(code: -1, message: "no delivery report") }
        return report
    }

    /// `send(_:_:)` for a callback send: the span ends when `onDelivery` is told.
    public static func send(
        _ record: KafkaOutgoingRecord, onDelivery: @escaping DeliveryHandler,
        _ send: (KafkaOutgoingRecord, @escaping DeliveryHandler) -> Void
    ) {
        guard Telemetry.isTracing else { return send(record, onDelivery) }
        var traced = record
        guard let span = start(&traced) else { return send(traced, onDelivery) }
        send(traced) { result in
            end(span, result)
            onDelivery(result)
        }
    }

    private static func start(_ record: inout KafkaOutgoingRecord) -> (any Span)? {
        var parent: ServiceContext
        if let current = ServiceContext.current, Spans.currentHeaders != nil {
            parent = current
        } else {
            guard record.headers.contains(where: { $0.key == "traceparent" }) else { return nil }
            parent = .topLevel
            InstrumentationSystem.instrument.extract(record.headers, into: &parent, using: KafkaHeaderExtractor())
        }
        let span = InstrumentationSystem.tracer.startSpan("send \(record.topic)", context: parent, ofKind: .producer)
        span.attributes = MessagingAttributes.producer(record)
        InstrumentationSystem.instrument.inject(span.context, into: &record.headers, using: KafkaHeaderInjector())
        return span
    }
}

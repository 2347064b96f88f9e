import Instrumentation
import Kafka
import ServiceContextModule
import Tracing

/// The spans of one request's handling. Every entry point is a single flag test when tracing is
/// off: no context is extracted, no span or attribute is built.
public enum Spans {
    /// The consumer span of the record being handled, for attributes learnt later (action, outcome).
    @TaskLocal static var record: (any Span)?
    /// The innermost child span (`child`), for links learnt while it runs.
    @TaskLocal static var innermost: (any Span)?

    /// Runs `body` in a consumer span (`process <topic>`) continuing the record's `traceparent`.
    public static func consuming<T>(
        _ record: KafkaRecord, isolation: isolated (any Actor)? = #isolation, _ body: () async -> T
    ) async -> T {
        guard Telemetry.isTracing else { return await body() }
        var parent = ServiceContext.topLevel
        InstrumentationSystem.instrument.extract(record.headers, into: &parent, using: KafkaHeaderExtractor())
        let span = InstrumentationSystem.tracer.startSpan("process \(record.topic)", context: parent, ofKind: .consumer)
        span.attributes = MessagingAttributes.consumer(record, group: Telemetry.consumerGroup)
        defer { span.end() }
        return await ServiceContext.$current.withValue(span.context) {
            await Spans.$record.withValue(span) { await body() }
        }
    }

    /// A record's consumer span kept open past the task that handled the record: it ends when
    /// the record's last output is acknowledged, on whatever thread that report arrives.
    struct RecordSpan: Sendable {
        let span: any Span
        var context: ServiceContext { span.context }
        func end() { span.end() }
    }

    /// Starts the consumer span of `consuming` without running anything in it (nil when not
    /// tracing); `running` binds it around the handling, `end` closes it.
    static func startConsuming(_ record: KafkaRecord) -> RecordSpan? {
        guard Telemetry.isTracing else { return nil }
        var parent = ServiceContext.topLevel
        InstrumentationSystem.instrument.extract(record.headers, into: &parent, using: KafkaHeaderExtractor())
        let span = InstrumentationSystem.tracer.startSpan("process \(record.topic)", context: parent, ofKind: .consumer)
        span.attributes = MessagingAttributes.consumer(record, group: Telemetry.consumerGroup)
        return RecordSpan(span: span)
    }

    /// Runs `body` as part of the record's span (its current context and `record`).
    static func running<T>(_ recordSpan: RecordSpan?, isolation: isolated (any Actor)? = #isolation, _ body: () async -> T) async -> T {
        guard let recordSpan else { return await body() }
        return await ServiceContext.$current.withValue(recordSpan.context) {
            await Spans.$record.withValue(recordSpan.span) { await body() }
        }
    }

    /// Runs `body` (synchronous, possibly outside any task: a delivery report's thread) with
    /// `context` as the current context, so a send's producer span is its child.
    static func within<T>(_ context: ServiceContext?, _ body: () -> T) -> T {
        guard let context else { return body() }
        return ServiceContext.$current.withValue(context) { body() }
    }

    /// Notes on the record's span what its answer was.
    public static func noteOutcome(action: String, outcome: String) {
        guard Telemetry.isTracing, let span = record else { return }
        span.attributes.merge(MessagingAttributes.outcome(action: action, outcome: outcome))
        if outcome != "ok" && outcome != "none" { span.setStatus(SpanStatus(code: .error, message: outcome)) }
    }

    /// Notes an error the record's handling threw (answered as `internal_error`): its type.
    public static func noteFailure(_ error: any Error) {
        guard Telemetry.isTracing, let span = record else { return }
        span.attributes["error.type"] = String(reflecting: type(of: error))
        span.attributes["order_service.outcome"] = "internal_error"
        span.setStatus(SpanStatus(code: .error, message: "internal_error"))
    }

    /// Runs `body` in a child span of the current context (an upstream call, a transaction).
    public static func child<T, E: Error>(
        _ name: @autoclosure () -> String, kind: SpanKind = .internal, attributes: @autoclosure () -> SpanAttributes = [:], links: [ServiceContext] = [],
        isolation: isolated (any Actor)? = #isolation, _ body: () async throws(E) -> T
    ) async throws(E) -> T {
        guard Telemetry.isTracing, let parent = ServiceContext.current else { return try await body() }
        let span = InstrumentationSystem.tracer.startSpan(name(), context: parent, ofKind: kind)
        span.attributes = attributes()
        for link in links { span.addLink(SpanLink(context: link, attributes: [:])) }
        defer { span.end() }
        let result = await ServiceContext.$current.withValue(span.context) { () async -> Result<T, E> in
            await Spans.$innermost.withValue(span) { () async -> Result<T, E> in
                do throws(E) { return .success(try await body()) } catch { return .failure(error) }
            }
        }
        switch result {
        case .success(let value): return value
        case .failure(let error):
            span.recordError(error)
            span.attributes["error.type"] = String(reflecting: type(of: error))
            span.setStatus(SpanStatus(code: .error, message: "\(error)"))
            throw error
        }
    }

    /// Links the innermost child span to the span a `traceparent` names (an upstream's reply).
    public static func linkInnermost(to traceparent: String) {
        guard Telemetry.isTracing, let span = innermost else { return }
        var context = ServiceContext.topLevel
        InstrumentationSystem.instrument.extract([KafkaHeader("traceparent", traceparent)], into: &context, using: KafkaHeaderExtractor())
        var attributes = SpanAttributes()
        attributes["order_service.link"] = "reply"
        span.addLink(SpanLink(context: context, attributes: attributes))
    }

    /// The current context, to link a batch to the requests it serves (nil when not tracing).
    public static var currentContext: ServiceContext? { Telemetry.isTracing ? ServiceContext.current : nil }

    /// `traceparent`/`tracestate` headers naming the current span (nil when not tracing or no span).
    public static var currentHeaders: [KafkaHeader]? {
        guard Telemetry.isTracing, let context = ServiceContext.current else { return nil }
        var headers: [KafkaHeader] = []
        InstrumentationSystem.instrument.inject(context, into: &headers, using: KafkaHeaderInjector())
        return headers.contains { $0.key == "traceparent" } ? headers : nil
    }

    /// The trace and span id of the current span, for log lines.
    static func currentIDs() -> (trace: String, span: String)? {
        guard Telemetry.isTracing, let context = ServiceContext.current else { return nil }
        var carrier: [String: String] = [:]
        InstrumentationSystem.instrument.inject(context, into: &carrier, using: DictionaryInjector())
        guard let tp = carrier["traceparent"] else { return nil }
        let parts = tp.split(separator: "-")
        guard parts.count == 4 else { return nil }
        return (String(parts[1]), String(parts[2]))
    }
}

extension Spans {
    /// Runs a batch serving many requests in a span of its own: the child of its request when it
    /// serves one, else a new trace linked to each request's span (the messaging conventions'
    /// batch shape: one batch belongs to many traces).
    public static func batch<T>(
        _ name: String, _ requests: [ServiceContext?], isolation: isolated (any Actor)? = #isolation, _ body: () async throws -> T
    ) async throws -> T {
        Instruments.batch(size: requests.count)
        guard Telemetry.isTracing else { return try await body() }
        let contexts = requests.compactMap { $0 }
        let parent = contexts.count == 1 ? contexts[0] : ServiceContext.topLevel
        return try await ServiceContext.$current.withValue(parent) {
            try await child(
                name, kind: .client, attributes: MessagingAttributes.database(operation: "batch", batchSize: requests.count),
                links: contexts.count == 1 ? [] : contexts, body)
        }
    }
}

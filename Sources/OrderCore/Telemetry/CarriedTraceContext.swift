import ServiceContextModule

/// The trace context of the current task, taken along to code that runs outside it: task-local
/// values do not exist on a connection's dispatch queue, where a synchronous transaction's body
/// runs and builds outbox records whose headers continue the request's trace.
struct CarriedTraceContext: Sendable {
    private let traceparent: String?
    private let context: ServiceContext?

    /// The current task's values.
    init() {
        traceparent = TraceContext.traceparent
        context = Spans.currentContext
    }

    /// Runs `body` with the carried values bound again (on any thread).
    func bind<T>(_ body: () throws -> T) rethrows -> T {
        guard let context else { return try TraceContext.$traceparent.withValue(traceparent, operation: body) }
        return try ServiceContext.$current.withValue(context) { try TraceContext.$traceparent.withValue(traceparent, operation: body) }
    }
}

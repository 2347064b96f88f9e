import Dispatch
import Testing

@testable import OrderCore

/// A synchronous transaction's body runs on a connection's dispatch queue, where the task's
/// task-local values do not exist: the trace context is carried there and bound again.
@Suite("Carried trace context")
struct CarriedTraceContextTests {
    static let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    /// `body` on a dispatch queue (no task there), its result handed back.
    func onQueue<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            DispatchQueue(label: "carried-trace-test").async { continuation.resume(returning: body()) }
        }
    }

    @Test func outgoingHeadersOnAQueueContinueTheTasksTrace() async throws {
        let (carried, lost) = await TraceContext.$traceparent.withValue(Self.parent) { () async -> (String?, String?) in
            let trace = CarriedTraceContext()
            let carried = await onQueue { trace.bind { TraceContext.outgoingHeaders.first { $0.key == "traceparent" }?.stringValue } }
            let lost = await onQueue { TraceContext.outgoingHeaders.first { $0.key == "traceparent" }?.stringValue }
            return (carried, lost)
        }
        let header = try #require(carried)
        #expect(header.hasPrefix("00-0af7651916cd43dd8448eb211c80319c-"), "a child of the request's trace: \(header)")
        #expect(lost == nil, "without carrying, the queue sees no trace")
    }

    @Test func withoutATraceNothingIsBound() async {
        let trace = CarriedTraceContext()
        let headers = await onQueue { trace.bind { TraceContext.outgoingHeaders } }
        #expect(headers.isEmpty)
    }
}

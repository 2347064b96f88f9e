import Synchronization
import Tracing

extension UpstreamClient {
    /// Sends `body(requestId)` to `topic` with reply-to/correlation-id headers and waits for the
    /// reply on `replyTopic`; returns the request's id with the reply. Traced as a client span
    /// (`<service> request`, its producer span a child) and measured by outcome.
    public func request(service: String, topic: String, replyTopic: String, body: (String) -> JSON) async throws(UpstreamFailure) -> (id: String, reply: JSON) {
        let started = ContinuousClock.now
        do {
            let answer = try await Spans.child("\(service) request", kind: .client, attributes: Self.attributes(service, topic)) { () async throws(UpstreamFailure) in
                let answer = try await untracedRequest(service: service, topic: topic, replyTopic: replyTopic, body: body)
                if Telemetry.isTracing, let tp = inbox.replyTraces.withLock({ $0.removeValue(forKey: answer.id) }) { Spans.linkInnermost(to: tp) }
                return answer
            }
            Instruments.upstream(service: service, outcome: "ok", latency: ContinuousClock.now - started)
            return answer
        } catch {
            Instruments.upstream(service: service, outcome: error.metricOutcome, latency: ContinuousClock.now - started)
            throw error
        }
    }
}

extension UpstreamClient {
    static func attributes(_ service: String, _ topic: String) -> SpanAttributes {
        var a = SpanAttributes()
        a["messaging.system"] = "kafka"
        a["messaging.destination.name"] = topic
        a["order_service.upstream"] = service
        return a
    }
}

extension UpstreamFailure {
    var metricOutcome: String {
        switch self {
        case .timeout: "timeout"
        case .unavailable: "unavailable"
        case .badReply: "bad_reply"
        }
    }
}

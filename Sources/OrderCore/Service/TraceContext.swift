import Kafka

/// W3C trace context carried through the handling of one record: read from the request's
/// `traceparent` header and propagated (as a child span: same trace id, new parent id) to the
/// upstream requests, outbox records and dead letters it causes. Replies carry it unchanged.
public enum TraceContext {
    @TaskLocal public static var traceparent: String?

    /// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, not all-zero ids.
    public static func isValid(_ value: String) -> Bool {
        let parts = value.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0].count == 2, parts[1].count == 32, parts[2].count == 16, parts[3].count == 2,
            parts[0] != "ff", parts.allSatisfy({ $0.allSatisfy(\.isHexDigit) && $0 == $0.lowercased() })
        else { return false }
        return parts[1] != String(repeating: "0", count: 32) && parts[2] != String(repeating: "0", count: 16)
    }

    /// A child of `parent`: same trace and flags, a fresh parent id.
    public static func child(of parent: String) -> String? {
        guard isValid(parent) else { return nil }
        let parts = parent.split(separator: "-")
        var span = ""
        repeat { span = String(UInt64.random(in: 1...UInt64.max), radix: 16) } while span.isEmpty
        span = String(repeating: "0", count: 16 - span.count) + span
        return "00-\(parts[1])-\(span)-\(parts[3])"
    }

    /// Headers for a record caused by the record being handled now.
    public static var outgoingHeaders: [KafkaHeader] {
        // With tracing on, the current span's own context (and the producer span replaces it).
        if let headers = Spans.currentHeaders { return headers }
        guard let parent = traceparent, let child = child(of: parent) else { return [] }
        return [KafkaHeader("traceparent", child)]
    }
}

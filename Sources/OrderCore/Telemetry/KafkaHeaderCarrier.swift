import Foundation
import Instrumentation
import Kafka

/// Reads trace context (`traceparent`, `tracestate`) out of record headers. A client's
/// `tracestate` is cut to what W3C Trace Context asks vendors to carry (`boundedTraceState`): it
/// is sent on with every record the request causes, so its size must not be the client's choice.
public struct KafkaHeaderExtractor: Extractor {
    public init() {}
    public func extract(key: String, from carrier: [KafkaHeader]) -> String? {
        guard let value = carrier.last(where: { $0.key == key })?.stringValue else { return nil }
        return key == "tracestate" ? Self.boundedTraceState(value) : value
    }

    /// At most 32 list members and 512 bytes: members over 128 bytes go first, then members from
    /// the end (W3C Trace Context, "tracestate" limits); nil when nothing is left.
    static func boundedTraceState(_ value: String, maxBytes: Int = 512, maxMembers: Int = 32) -> String? {
        var members = value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        func bytes() -> Int { members.reduce(0) { $0 + $1.utf8.count } + max(0, members.count - 1) }
        if bytes() > maxBytes { members.removeAll { $0.utf8.count > 128 } }
        if members.count > maxMembers { members.removeLast(members.count - maxMembers) }
        while bytes() > maxBytes { members.removeLast() }
        return members.isEmpty ? nil : members.joined(separator: ",")
    }
}

/// Writes trace context into record headers, replacing any header of the same name.
public struct KafkaHeaderInjector: Injector {
    public init() {}
    public func inject(_ value: String, forKey key: String, into carrier: inout [KafkaHeader]) {
        carrier.removeAll { $0.key == key }
        carrier.append(KafkaHeader(key, value))
    }
}

/// Trace context written into a plain dictionary (log correlation, tests).
struct DictionaryInjector: Injector {
    func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) { carrier[key] = value }
}

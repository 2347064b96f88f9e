import Instrumentation
import Kafka

/// Reads trace context (`traceparent`, `tracestate`) out of record headers.
public struct KafkaHeaderExtractor: Extractor {
    public init() {}
    public func extract(key: String, from carrier: [KafkaHeader]) -> String? {
        carrier.last { $0.key == key }?.stringValue
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

import CoreMetrics
import Synchronization

/// The OpenTelemetry instruments (swift-metrics API; the OTel exporter when bootstrapped),
/// named after the messaging conventions (`messaging.*`) and `order_service.*` for the domain.
/// Fed by the same calls that feed the metrics record (`ServiceMetrics`), so the two agree.
/// Instruments are made once per attribute set and cached: swift-metrics' factory takes a lock.
/// Every entry point is one flag test while no exporter runs.
public enum Instruments {
    /// Every instrument made so far, by kind, label and attributes.
    private static let made = Mutex<[String: any Sendable]>([:])

    /// The names and units exported (README "Observability" lists them with their attributes).
    public static let names: [(name: String, unit: String)] = [
        ("messaging.process.duration", "s"), ("messaging.client.consumed.messages", "{message}"),
        ("order_service.requests.in_flight", "{request}"), ("order_service.dead_letters", "{message}"),
        ("messaging.kafka.consumer.lag", "{message}"), ("order_service.upstream.duration", "s"),
        ("order_service.upstream.timeouts", "{request}"), ("order_service.db.batch.size", "{request}"),
        ("order_service.telemetry.spans.dropped", "{span}"), ("db.client.connection.wait_time", "s"),
    ]

    static func key(_ label: String, _ dims: [(String, String)]) -> String {
        dims.reduce(label) { $0 + "\u{0}" + $1.0 + "=" + $1.1 }
    }

    /// The instrument for this kind, label and attribute set, made on first use.
    private static func cached<I: Sendable>(_ kind: String, _ label: String, _ dims: [(String, String)], _ make: () -> I) -> I {
        let k = kind + "\u{0}" + key(label, dims)
        return made.withLock { m in
            if let found = m[k] as? I { return found }
            let fresh = make()
            m[k] = fresh
            return fresh
        }
    }

    static func counter(_ label: String, unit: String, _ dims: [(String, String)]) -> Counter {
        cached("counter", label, dims) { Counter(label: label, dimensions: dims + [("unit", unit)]) }
    }

    static func timer(_ label: String, _ dims: [(String, String)]) -> Timer {
        cached("timer", label, dims) { Timer(label: label, dimensions: dims + [("unit", "s")], preferredDisplayUnit: .seconds) }
    }

    static func gauge(_ label: String, unit: String, _ dims: [(String, String)]) -> Gauge {
        cached("gauge", label, dims) { Gauge(label: label, dimensions: dims + [("unit", unit)]) }
    }

    static func histogram(_ label: String, unit: String, _ dims: [(String, String)]) -> Recorder {
        cached("histogram", label, dims) { Recorder(label: label, dimensions: dims + [("unit", unit)], aggregate: true) }
    }

    static func outcomeDimensions(action: String, outcome: String) -> [(String, String)] {
        var d = [("messaging.system", "kafka"), ("messaging.operation.name", "process"), ("order_service.action", action), ("order_service.outcome", outcome)]
        if outcome != "ok" && outcome != "none" { d.append(("error.type", outcome)) }
        return d
    }

    /// One request handled: its duration and the consumed-messages count.
    public static func requestHandled(action: String, outcome: String, latency: Duration) {
        guard Telemetry.isMetering else { return }
        let dims = outcomeDimensions(action: action, outcome: outcome)
        timer("messaging.process.duration", dims).recordNanoseconds(nanoseconds(latency))
        counter("messaging.client.consumed.messages", unit: "{message}", dims).increment()
    }

    public static func deadLettered(_ n: Int) {
        guard Telemetry.isMetering, n > 0 else { return }
        counter("order_service.dead_letters", unit: "{message}", [("messaging.system", "kafka")]).increment(by: n)
    }

    public static func inFlight(_ n: Int) {
        guard Telemetry.isMetering else { return }
        gauge("order_service.requests.in_flight", unit: "{request}", []).record(n)
    }

    /// Consumer lag per partition ("topic[partition]" keys, as in the metrics record).
    public static func consumerLag(_ lag: [String: Int64]) {
        guard Telemetry.isMetering else { return }
        for (tp, l) in lag {
            guard let open = tp.lastIndex(of: "["), tp.hasSuffix("]") else { continue }
            let topic = String(tp[..<open])
            let partition = String(tp[tp.index(after: open)..<tp.index(before: tp.endIndex)])
            gauge("messaging.kafka.consumer.lag", unit: "{message}", [
                ("messaging.system", "kafka"), ("messaging.destination.name", topic), ("messaging.destination.partition.id", partition),
            ]).record(l)
        }
    }

    /// An upstream request answered, failed or timed out ("ok", "timeout", "unavailable", "bad_reply").
    public static func upstream(service: String, outcome: String, latency: Duration) {
        guard Telemetry.isMetering else { return }
        let dims = [("order_service.upstream", service), ("order_service.outcome", outcome)]
        timer("order_service.upstream.duration", dims).recordNanoseconds(nanoseconds(latency))
        if outcome == "timeout" { counter("order_service.upstream.timeouts", unit: "{request}", [("order_service.upstream", service)]).increment() }
    }

    public static func batch(size: Int) {
        guard Telemetry.isMetering else { return }
        histogram("order_service.db.batch.size", unit: "{request}", [("db.system.name", "postgresql")]).record(size)
    }

    /// A caller waited this long for a pooled database connection (all were lent out).
    public static func databasePoolWait(_ waited: Duration) {
        guard Telemetry.isMetering else { return }
        timer("db.client.connection.wait_time", [("db.system.name", "postgresql")]).recordNanoseconds(nanoseconds(waited))
    }

    static func nanoseconds(_ d: Duration) -> Int64 {
        let c = d.components
        let (ns, overflow) = c.seconds.multipliedReportingOverflow(by: 1_000_000_000)
        return overflow ? .max : ns.addingReportingOverflow(c.attoseconds / 1_000_000_000).partialValue
    }
}

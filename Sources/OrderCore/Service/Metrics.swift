import Foundation
import Kafka
import Logging
import ServiceLifecycle
import Synchronization

/// Counters of one reporting window: requests by action and outcome, latencies, dead letters,
/// and the consumer lag per partition from librdkafka's statistics.
public final class ServiceMetrics: Sendable {
    private struct Window {
        var started = ContinuousClock.now
        var requests: [String: Int] = [:]  // "action/outcome"
        var latenciesMs: [Double] = []
        var deadLetters = 0
    }
    private let window = Mutex(Window())
    private let lag = Mutex<[String: Int64]>([:])

    public init() {}

    public func record(action: String, outcome: String, latency: Duration) {
        let ms = Double(latency.components.seconds) * 1000 + Double(latency.components.attoseconds) / 1e15
        Instruments.requestHandled(action: action, outcome: outcome, latency: latency)
        window.withLock { w in
            w.requests["\(action)/\(outcome)", default: 0] += 1
            if w.latenciesMs.count < 100_000 { w.latenciesMs.append(ms) }
        }
    }

    public func deadLettered(_ n: Int = 1) {
        Instruments.deadLettered(n)
        window.withLock { $0.deadLetters += n }
    }

    /// Reads `consumer_lag` per partition out of a librdkafka statistics document.
    public func update(statistics json: String) {
        guard let stats = try? JSON.parse(Array(json.utf8)), case .object(let topics)? = stats["topics"] else { return }
        var out: [String: Int64] = [:]
        for (topic, t) in topics {
            guard case .object(let partitions)? = t["partitions"] else { continue }
            for (p, part) in partitions where p != "-1" {
                if case .int(let l)? = part["consumer_lag"], l >= 0 { out["\(topic)[\(p)]"] = l }
            }
        }
        Instruments.consumerLag(out)
        lag.withLock { $0 = out }
    }

    /// The window's report, and a new window.
    public func report(instance: String, inFlight: Int) -> JSON {
        let w = window.withLock { w -> Window in
            defer { w = Window() }
            return w
        }
        let sorted = w.latenciesMs.sorted()
        // Nearest rank: the smallest sample with at least `perMille`/1000 of all samples at or
        // below it (integer arithmetic: no rounding surprises at exact ranks).
        func p(_ perMille: Int) -> JSON {
            guard !sorted.isEmpty else { return .null }
            let rank = (sorted.count * perMille + 999) / 1000
            return .number(String(format: "%.2f", sorted[min(sorted.count, max(1, rank)) - 1]))
        }
        let seconds = ContinuousClock.now - w.started
        return .object([
            ("event", "order_service_metrics"), ("instance", .string(instance)),
            ("at", .string(ISO8601DateFormatter().string(from: Date()))),
            ("window_seconds", .number(String(format: "%.1f", Double(seconds.components.seconds)))),
            ("requests", .object(w.requests.sorted { $0.key < $1.key }.map { ($0.key, .int(Int64($0.value))) })),
            ("latency_ms", .object([("p50", p(500)), ("p95", p(950)), ("p99", p(990)), ("max", sorted.last.map { .number(String(format: "%.2f", $0)) } ?? .null)])),
            ("in_flight", .int(Int64(inFlight))), ("dead_letters", .int(Int64(w.deadLetters))),
            ("consumer_lag", .object(lag.withLock { $0 }.sorted { $0.key < $1.key }.map { ($0.key, .int($0.value)) })),
        ])
    }

    /// The action a reply names, if it is one of the contract's ("unknown" / "malformed" otherwise).
    public static func action(ofReply bytes: [UInt8]) -> String {
        let head = bytes.prefix(1024)
        let marker = Array(#""action":""#.utf8)
        guard let at = find(marker, in: head) else { return "malformed" }
        let rest = head[at...]
        guard let end = rest.firstIndex(of: UInt8(ascii: "\"")) else { return "unknown" }
        let action = String(decoding: rest[..<end], as: UTF8.self)
        return RequestTopicKind.allCases.contains { $0.actions.contains(action) } ? action : "unknown"
    }

    /// The outcome a reply says: "ok", or its error code (our own compact encoding, read from the front).
    public static func outcome(ofReply bytes: [UInt8]) -> String {
        let head = bytes.prefix(1024)
        if find(Array(#""status":"ok""#.utf8), in: head) != nil { return "ok" }
        let marker = Array(#""code":""#.utf8)
        guard let at = find(marker, in: head) else { return "error" }
        let rest = head[at...]
        guard let end = rest.firstIndex(of: UInt8(ascii: "\"")) else { return "error" }
        return String(decoding: rest[..<end], as: UTF8.self)
    }

    /// The index just after the first occurrence of `needle` in `hay` (a plain scan over raw
    /// bytes: this runs for every reply, and the generic `firstRange` was a visible cost).
    static func find(_ needle: [UInt8], in hay: ArraySlice<UInt8>) -> Int? {
        guard !needle.isEmpty, hay.count >= needle.count else { return nil }
        return hay.withUnsafeBufferPointer { h in
            needle.withUnsafeBufferPointer { n -> Int? in
                var i = 0
                let last = h.count - n.count
                while i <= last {
                    if h[i] == n[0] {
                        var j = 1
                        while j < n.count, h[i + j] == n[j] { j += 1 }
                        if j == n.count { return hay.startIndex + i + n.count }
                    }
                    i += 1
                }
                return nil
            }
        }
    }
}

/// Sends a metrics record to the metrics topic every `interval`.
public struct MetricsReporter: Service {
    public init(
        metrics: ServiceMetrics, producer: any RecordSender, topic: String, instance: String, interval: Duration,
        inFlight: @escaping @Sendable () async -> Int, logger: Logger
    ) {
        self.metrics = metrics
        self.producer = producer
        self.topic = topic
        self.instance = instance
        self.interval = interval
        self.inFlight = inFlight
        self.logger = logger
    }

    let metrics: ServiceMetrics
    let producer: any RecordSender
    let topic: String
    let instance: String
    let interval: Duration
    let inFlight: @Sendable () async -> Int
    let logger: Logger

    public func run() async throws {
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try await Task.sleep(for: interval)
                let inFlightNow = await inFlight()
                Instruments.inFlight(inFlightNow)
                let report = metrics.report(instance: instance, inFlight: inFlightNow)
                do {
                    _ = try await producer.send(KafkaOutgoingRecord(
                        topic: topic, key: Array(instance.utf8), value: report.bytes,
                        headers: [KafkaHeader("content-type", "application/json")]))
                } catch {
                    logger.warning("metrics record not sent: \(error)")
                }
            }
        }
    }
}

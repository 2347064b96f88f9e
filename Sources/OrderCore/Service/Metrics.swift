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

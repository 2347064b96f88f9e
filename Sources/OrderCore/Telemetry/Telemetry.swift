import Synchronization

/// Whether spans and OpenTelemetry instruments are recorded. Both stay off (one relaxed load on
/// the hot path) unless the process bootstrapped an exporter (`OrderTelemetry.OTelBootstrap`), so
/// that without OTEL_* variables the service behaves and costs as it did before.
public enum Telemetry {
    private static let tracingFlag = Atomic<Bool>(false)
    private static let metricsFlag = Atomic<Bool>(false)
    private static let group = Mutex<String?>(nil)

    public static var isTracing: Bool { tracingFlag.load(ordering: .relaxed) }
    public static var isMetering: Bool { metricsFlag.load(ordering: .relaxed) }

    /// Called once, after the tracing/metrics systems were bootstrapped with real backends.
    public static func enable(tracing: Bool, metrics: Bool) {
        tracingFlag.store(tracing, ordering: .relaxed)
        metricsFlag.store(metrics, ordering: .relaxed)
    }

    /// The consumer group named on consumer spans (`messaging.consumer.group.name`).
    public static var consumerGroup: String? {
        get { group.withLock { $0 } }
        set { group.withLock { $0 = newValue } }
    }
}

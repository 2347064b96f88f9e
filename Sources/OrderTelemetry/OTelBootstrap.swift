import Foundation
import Logging
import Metrics
import OTel
import OrderCore
import ServiceLifecycle

/// Starts swift-otel's tracing and metrics backends from the standard OTEL_* variables, or
/// nothing at all: without an OTLP endpoint (or with OTEL_SDK_DISABLED=true) no exporter, tracer
/// or metrics backend exists and `Telemetry` stays off.
public enum OTelBootstrap {
    /// The service to run beside the program's own (first in its ServiceGroup, so that it shuts
    /// down last and flushes the final spans); nil when nothing is exported.
    public static func start(
        serviceName: String, environment: [String: String] = ProcessInfo.processInfo.environment, logger: Logger
    ) throws -> (any Service)? {
        let env = OTelEnvironment(environment)
        guard env.traces || env.metrics else { return nil }
        for w in env.warnings { logger.warning("\(w)") }
        var config = OTel.Configuration.default
        config.serviceName = serviceName
        config.logs.enabled = false
        config.traces.enabled = env.traces
        config.metrics.enabled = env.metrics
        let shared = OnceLogHandler.Shared(every: .seconds(600))
        let base = logger.handler
        config.diagnosticLogger = .custom(Logger(label: "otel") { _ in OnceLogHandler(base: base, state: shared) })
        let service = try OTel.bootstrap(configuration: config, environment: env.variables)
        Telemetry.enable(tracing: env.traces, metrics: env.metrics)
        logger.info("OpenTelemetry export on", metadata: [
            "traces": "\(env.traces)", "metrics": "\(env.metrics)",
            "endpoint": "\(environment["OTEL_EXPORTER_OTLP_ENDPOINT"] ?? environment["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] ?? environment["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"] ?? "")",
        ])
        return service
    }
}

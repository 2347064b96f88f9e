/// What the standard OTEL_* variables ask for, decided before swift-otel sees them: the SDK runs
/// only when an OTLP endpoint is named (swift-otel would otherwise export to localhost:4318), and
/// only the OTLP/HTTP exporter is built, so `grpc` becomes `http/protobuf` (with a warning)
/// instead of swift-otel's fatal error.
public struct OTelEnvironment: Equatable, Sendable {
    public var traces: Bool
    public var metrics: Bool
    /// The variables handed to swift-otel.
    public var variables: [String: String]
    /// Said once at start-up.
    public var warnings: [String]

    /// Every variable read, here or by swift-otel (deploy files may set these; README lists them).
    public static let recognised: [String] = [
        "OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_PROPAGATORS", "OTEL_LOG_LEVEL",
        "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER",
        "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
        "OTEL_EXPORTER_OTLP_COMPRESSION", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
        "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
        "OTEL_EXPORTER_OTLP_CERTIFICATE", "OTEL_EXPORTER_OTLP_CLIENT_KEY", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
        "OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_EXPORT_TIMEOUT", "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
        "OTEL_METRIC_EXPORT_INTERVAL", "OTEL_METRIC_EXPORT_TIMEOUT", "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
    ]

    public init(_ env: [String: String]) {
        func set(_ name: String) -> String? { env[name].flatMap { $0.trimmingCharacters(in: .whitespaces).isEmpty ? nil : $0 } }
        var variables = env.filter { $0.key.hasPrefix("OTEL_") }
        var warnings: [String] = []
        let disabled = set("OTEL_SDK_DISABLED")?.lowercased() == "true"
        let anyEndpoint = set("OTEL_EXPORTER_OTLP_ENDPOINT") != nil
        func wanted(_ signal: String) -> Bool {
            guard !disabled, anyEndpoint || set("OTEL_EXPORTER_OTLP_\(signal)_ENDPOINT") != nil else { return false }
            switch set("OTEL_\(signal)_EXPORTER")?.lowercased() {
            case nil, "otlp": return true
            case "none": return false
            case let other?:
                warnings.append("OTEL_\(signal)_EXPORTER=\(other) is not supported here: exporting \(signal.lowercased()) over OTLP/HTTP")
                variables["OTEL_\(signal)_EXPORTER"] = "otlp"
                return true
            }
        }
        traces = wanted("TRACES")
        metrics = wanted("METRICS")
        for name in ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"] {
            guard let p = set(name)?.lowercased() else { continue }
            if p != "http/protobuf" && p != "http/json" {
                warnings.append("\(name)=\(p) is not supported (only the OTLP/HTTP exporter is built): using http/protobuf")
                variables[name] = "http/protobuf"
            }
        }
        // Only traces and metrics are exported; logs stay on standard error. Decided here: swift-otel
        // would turn every signal (logs too, bootstrapping logging a second time) on for
        // OTEL_SDK_DISABLED=false.
        variables["OTEL_LOGS_EXPORTER"] = "none"
        variables["OTEL_SDK_DISABLED"] = nil
        self.variables = variables
        self.warnings = warnings
    }
}

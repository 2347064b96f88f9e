import Foundation
import Kafka
import Logging

/// One JSON object per line on standard error: ts, level, label, msg, source, then metadata.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private static let lock = NSLock()

    public init(label: String) { self.label = label }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields: [(String, JSON)] = [
            ("ts", .string(Self.timestamp())), ("level", .string(event.level.rawValue)), ("label", .string(label)),
            ("msg", .string(event.message.description)), ("source", .string(event.source)),
        ]
        var all = metadata
        if let provided = metadataProvider?.get() { all.merge(provided) { _, new in new } }
        if let extra = event.metadata { all.merge(extra) { _, new in new } }
        if let ids = Spans.currentIDs() {
            all["trace_id"] = "\(ids.trace)"
            all["span_id"] = "\(ids.span)"
        }
        for (k, v) in all.sorted(by: { $0.key < $1.key }) { fields.append((k, .string(v.description))) }
        var line = JSON.object(fields).bytes
        line.append(0x0A)
        Self.lock.lock()
        defer { Self.lock.unlock() }
        FileHandle.standardError.write(Data(line))
    }

    /// The current span's ids for plain text lines (JSON lines add them in `log`).
    static let traceIDs = Logger.MetadataProvider {
        guard let ids = Spans.currentIDs() else { return [:] }
        return ["trace_id": "\(ids.trace)", "span_id": "\(ids.span)"]
    }

    static func timestamp() -> String {
        var tv = timeval()
        gettimeofday(&tv, nil)
        var t = time_t(tv.tv_sec)
        var tm = tm()
        gmtime_r(&t, &tm)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
            tm.tm_sec, Int(tv.tv_usec / 1000))
    }

    /// Installs JSON (default) or plain text logs per LOG_FORMAT. Both carry the current span's
    /// `trace_id` and `span_id` when tracing is on (text lines as `trace_id=… span_id=…`).
    public static func bootstrap(format: String? = ProcessInfo.processInfo.environment["LOG_FORMAT"]) {
        if format?.lowercased() == "text" {
            LoggingSystem.bootstrap({ StreamLogHandler.standardError(label: $0, metadataProvider: $1) }, metadataProvider: traceIDs)
        } else {
            LoggingSystem.bootstrap { JSONLogHandler(label: $0) }
        }
    }
}

extension KafkaRecord {
    /// Where a record came from and how the client correlates it, for log lines about it.
    public var logMetadata: Logger.Metadata {
        var m: Logger.Metadata = ["topic": "\(topic)", "partition": "\(partition)", "offset": "\(offset)"]
        if let c = header("correlation-id")?.stringValue { m["correlation_id"] = "\(c)" }
        if let t = header("traceparent")?.stringValue { m["traceparent"] = "\(t)" }
        if let v = value, v.count < 4096, let j = try? JSON.parse(v), case .string(let rid)? = j["request_id"] { m["request_id"] = "\(rid)" }
        return m
    }
}

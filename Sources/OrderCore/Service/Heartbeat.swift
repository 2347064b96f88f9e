import Foundation
import Logging
import ServiceLifecycle

/// The probes' files, so that probes need no HTTP: every `interval` it asks `Liveness` and
/// touches the heartbeat file only while the service is alive, and the readiness file
/// (`<path>.ready`) only while it is also ready (removing it as soon as it is not). `order-service
/// health [--ready]` succeeds while the file is fresh.
public struct Heartbeat: Sendable {
    public let path: String
    public let interval: Duration
    private let logger: Logger

    public init(path: String, interval: Duration = .seconds(5), logger: Logger) {
        self.path = path
        self.interval = interval
        self.logger = logger
    }

    /// The readiness file that belongs to a heartbeat file.
    public static func readyPath(for path: String) -> String { path + ".ready" }

    public var readyPath: String { Self.readyPath(for: path) }

    /// Creates the file, or updates its modification time.
    public static func touch(_ path: String) {
        if FileManager.default.fileExists(atPath: path) {
            try? FileManager.default.setAttributes([.modificationDate: Date()], ofItemAtPath: path)
        } else {
            _ = FileManager.default.createFile(atPath: path, contents: Data("\(ProcessInfo.processInfo.processIdentifier)\n".utf8))
        }
    }

    /// Beats until cancelled (or graceful shutdown), then removes both files. `sample` reads the
    /// service's state; if it hangs (a wedged dispatcher), no file is touched any more.
    public func run(liveness: Liveness, sample: @Sendable () async -> Liveness.Sample) async {
        var liveness = liveness
        var last = Liveness.Status(alive: true, ready: false)
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let status = liveness.assess(await sample())
            if status.alive { Self.touch(path) }
            if status.ready { Self.touch(readyPath) } else { try? FileManager.default.removeItem(atPath: readyPath) }
            if status.alive != last.alive {
                if status.alive { logger.notice("heartbeat resumed") } else {
                    logger.error("no progress: heartbeat stopped, the liveness probe will fail", metadata: ["reason": "\(status.reason ?? "")"])
                }
            } else if status.ready != last.ready {
                logger.info(status.ready ? "ready" : "not ready", metadata: status.reason.map { ["reason": "\($0)"] } ?? [:])
            }
            last = status
            try? await Task.sleep(for: interval)
        }
        try? FileManager.default.removeItem(atPath: readyPath)
        try? FileManager.default.removeItem(atPath: path)
    }

    /// Whether the file was touched within `maxAge`.
    public static func isFresh(path: String, maxAge: Duration) -> Bool {
        guard let attrs = try? FileManager.default.attributesOfItem(atPath: path),
            let modified = attrs[.modificationDate] as? Date
        else { return false }
        let age = Date().timeIntervalSince(modified)
        return age <= Double(maxAge.components.seconds)
    }
}

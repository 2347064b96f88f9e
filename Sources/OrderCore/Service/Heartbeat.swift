import Foundation
import ServiceLifecycle

/// Touches a file every `interval` while the service runs, so probes need no HTTP:
/// `order-service health` succeeds while the file is fresh.
public struct Heartbeat: Sendable {
    public let path: String
    public let interval: Duration

    public init(path: String, interval: Duration = .seconds(5)) {
        self.path = path
        self.interval = interval
    }

    public func beat() {
        let now = Date()
        if FileManager.default.fileExists(atPath: path) {
            try? FileManager.default.setAttributes([.modificationDate: now], ofItemAtPath: path)
        } else {
            FileManager.default.createFile(atPath: path, contents: Data("\(ProcessInfo.processInfo.processIdentifier)\n".utf8))
        }
    }

    /// Beats until cancelled (or graceful shutdown), then removes the file.
    public func run() async {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            beat()
            try? await Task.sleep(for: interval)
        }
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

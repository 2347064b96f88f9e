import Foundation
import Kafka
import OrderCore
import Testing
import TestSupport

/// A TCP proxy in front of PostgreSQL that a test can cut and restore, to simulate a database
/// outage for the service without disturbing other tests. A small Python program (python3 is a
/// prerequisite of the local setup); killing it drops every connection.
final class TCPProxy: Sendable {
    let port: Int
    let target: (host: String, port: Int)
    private let process = ProcessBox()
    private static let script = """
        import asyncio, sys
        lport, thost, tport = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
        async def pipe(r, w):
            try:
                while data := await r.read(65536):
                    w.write(data); await w.drain()
            except Exception: pass
            finally: w.close()
        async def handle(cr, cw):
            try: sr, sw = await asyncio.open_connection(thost, tport)
            except Exception: cw.close(); return
            await asyncio.gather(pipe(cr, sw), pipe(sr, cw))
        async def main():
            server = await asyncio.start_server(handle, '127.0.0.1', lport, reuse_address=True)
            print('ready', flush=True)
            async with server: await server.serve_forever()
        asyncio.run(main())
        """

    init(targetHost: String = "127.0.0.1", targetPort: Int = 5432) throws {
        port = Int.random(in: 20_000...40_000)
        target = (targetHost, targetPort)
        try start()
    }

    func start() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("tcp-proxy-\(port).py").path
        try Self.script.write(toFile: path, atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", path, String(port), target.host, String(target.port)]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        _ = out.fileHandleForReading.availableData  // "ready"
        process.set(p)
    }

    /// Cuts every connection and refuses new ones until `start()`.
    func stop() {
        guard let p = process.take() else { return }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
    }

    func url(from databaseURL: String) -> String {
        databaseURL.replacingOccurrences(of: "@127.0.0.1:\(target.port)/", with: "@127.0.0.1:\(port)/")
            .replacingOccurrences(of: "@localhost:\(target.port)/", with: "@127.0.0.1:\(port)/")
    }
}

final class ProcessBox: @unchecked Sendable {
    private let lock = NSLock()
    private var process: Process?
    func set(_ p: Process) { lock.withLock { process = p } }
    func take() -> Process? { lock.withLock { defer { process = nil }; return process } }
}

func add(_ user: Int64, _ product: Int64, _ quantity: Int64, id: String) -> JSON {
    .object([
        ("request_id", .string(id)), ("action", "add_item"), ("user_id", .int(user)), ("product_id", .int(product)),
        ("quantity", .int(quantity)),
    ])
}

/// Waits until every request id has a reply on the response topics; returns replies by id.
func collectReplies(_ system: TestSystem, ids: Set<String>, timeout: Duration) async throws -> [String: [[UInt8]]] {
    let deadline = ContinuousClock.now + timeout
    var byId: [String: [[UInt8]]] = [:]
    while ContinuousClock.now < deadline {
        byId = [:]
        for r in system.records(on: "cart_responses") + system.records(on: "order_responses") {
            guard let v = r.value, let j = try? JSON.parse(v), let id = j["request_id"]?.string, ids.contains(id) else { continue }
            byId[id, default: []].append(v)
        }
        if byId.count == ids.count { return byId }
        try await Task.sleep(for: .milliseconds(250))
    }
    return byId
}

/// The resident set of a process in MB; throws when /proc cannot tell (a memory bound must never
/// pass because nothing was measured).
func rssMegabytes(_ pid: Int32) throws -> Double {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
        let kb = line.split(separator: " ").compactMap({ Double($0) }).first, kb > 0
    else { throw TestSystemError("no VmRSS for process \(pid)") }
    return kb / 1024
}

/// RELIABILITY_SCALE (default 1) multiplies the load of the reliability tests; deploy/local/reliability.sh
/// runs them bigger (e.g. the crash test with 3 instances and over 10,000 requests).
let scale = max(1, Int(ProcessInfo.processInfo.environment["RELIABILITY_SCALE"] ?? "") ?? 1)

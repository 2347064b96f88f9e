import Foundation
import Kafka
import OrderCore
import Testing
import TestSupport

/// A TCP proxy in front of PostgreSQL that a test can cut and restore, to simulate a database
/// outage for the service without disturbing other tests. A small Python program (python3 is a
/// prerequisite of the local setup) on a port the system chooses. `cut()` drops every open
/// connection and turns new ones away (accepted, then closed at once) until `restore()`; its log
/// counts what it forwarded, cut and turned away, so a test can prove the fault reached the service.
final class TCPProxy: Sendable {
    let port: Int
    let target: DatabaseEndpoint
    let logPath: String
    private let process = ProcessBox()
    private static let script = """
        import asyncio, signal, sys
        thost, tport, logpath = sys.argv[1], int(sys.argv[2]), sys.argv[3]
        # The test runner's threads block some signals, and a child inherits that mask.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM})
        state = {'down': False, 'accepted': 0, 'refused': 0}
        live = set()
        def log(*a):
            with open(logpath, 'a') as f: print(*a, file=f, flush=True)
        async def pipe(r, w):
            try:
                while data := await r.read(65536):
                    w.write(data); await w.drain()
            except Exception: pass
            finally: w.close()
        def refuse(*ws):
            state['refused'] += 1; log('refused', state['refused'])
            for w in ws: w.transport.abort()
        async def handle(cr, cw):
            if state['down']: return refuse(cw)
            try: sr, sw = await asyncio.open_connection(thost, tport)
            except Exception as e: log('target-unreachable', repr(e)); cw.transport.abort(); return
            if state['down']: return refuse(cw, sw)
            state['accepted'] += 1; log('accepted', state['accepted'])
            pair = (cw, sw); live.add(pair)
            try: await asyncio.gather(pipe(cr, sw), pipe(sr, cw))
            finally: live.discard(pair)
        def cut():
            state['down'] = True
            n = len(live)
            for cw, sw in list(live): cw.transport.abort(); sw.transport.abort()
            live.clear()
            log('cut', n)
        def restore():
            state['down'] = False; log('restored')
        async def main():
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGUSR1, cut)
            loop.add_signal_handler(signal.SIGUSR2, restore)
            loop.add_signal_handler(signal.SIGTERM, loop.stop)
            server = await asyncio.start_server(handle, '127.0.0.1', 0)
            log('ready', server.sockets[0].getsockname()[1])
            async with server: await server.serve_forever()
        asyncio.run(main())
        """

    /// Starts a proxy to `target` and waits until it listens.
    init(target: DatabaseEndpoint) async throws {
        self.target = target
        let dir = FileManager.default.temporaryDirectory
        let id = UUID().uuidString.prefix(8)
        let scriptPath = dir.appendingPathComponent("tcp-proxy-\(id).py").path
        logPath = dir.appendingPathComponent("tcp-proxy-\(id).log").path
        try Self.script.write(toFile: scriptPath, atomically: true, encoding: .utf8)
        FileManager.default.createFile(atPath: logPath, contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", scriptPath, target.host, String(target.port), logPath]
        p.standardError = FileHandle(forWritingAtPath: logPath)
        try p.run()
        process.set(p)
        let log = logPath
        var port: Int?
        do {
            try await TestKafka.eventually("the TCP proxy to listen (\(log))", timeout: .seconds(15)) {
                guard p.isRunning else { throw TestSystemError("the TCP proxy exited: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")") }
                return Self.lines(log).contains { $0.hasPrefix("ready ") }
            }
            port = Self.lines(log).first { $0.hasPrefix("ready ") }.flatMap { Int($0.dropFirst(6)) }
        } catch {
            kill(p.processIdentifier, SIGKILL)
            throw error
        }
        guard let port else {
            kill(p.processIdentifier, SIGKILL)
            throw TestSystemError("the TCP proxy printed no port (\(log))")
        }
        self.port = port
    }

    /// A proxy in front of the database `conninfo` names, and `conninfo` rewritten to go through
    /// it (any libpq URI or keyword/value string; throws when it names no single TCP endpoint).
    static func inFront(of conninfo: String) async throws -> (proxy: TCPProxy, url: String) {
        let proxy = try await TCPProxy(target: TestDatabase.endpoint(of: conninfo))
        do {
            return (proxy, try TestDatabase.connectionString(conninfo, connectingTo: "127.0.0.1", port: proxy.port))
        } catch {
            proxy.terminate()
            throw error
        }
    }

    /// Drops every open connection and turns new ones away; returns how many were open.
    @discardableResult
    func cut() async throws -> Int {
        try await signalAndWait(SIGUSR1, for: "cut")
        return Self.lines(logPath).last { $0.hasPrefix("cut ") }.flatMap { Int($0.dropFirst(4)) } ?? 0
    }

    /// Forwards new connections again.
    func restore() async throws { try await signalAndWait(SIGUSR2, for: "restored") }

    /// Connections forwarded to PostgreSQL so far.
    var accepted: Int { count("accepted") }
    /// Connections turned away while cut.
    var refused: Int { count("refused") }

    /// Kills the proxy (every connection drops); for clean-up.
    func terminate() {
        guard let p = process.take() else { return }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
    }

    private func count(_ event: String) -> Int {
        Self.lines(logPath).last { $0.hasPrefix(event + " ") }.flatMap { Int($0.dropFirst(event.count + 1)) } ?? 0
    }

    private func signalAndWait(_ sig: Int32, for event: String) async throws {
        guard let p = process.peek(), p.isRunning else { throw TestSystemError("the TCP proxy is not running (\(logPath))") }
        let before = Self.lines(logPath).filter { $0.hasPrefix(event) }.count
        kill(p.processIdentifier, sig)
        let log = logPath
        try await TestKafka.eventually("the TCP proxy to log '\(event)'", timeout: .seconds(10)) {
            Self.lines(log).filter { $0.hasPrefix(event) }.count > before
        }
    }

    private static func lines(_ path: String) -> [Substring] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n")
    }
}

final class ProcessBox: @unchecked Sendable {
    private let lock = NSLock()
    private var process: Process?
    func set(_ p: Process) { lock.withLock { process = p } }
    func take() -> Process? { lock.withLock { defer { process = nil }; return process } }
    func peek() -> Process? { lock.withLock { process } }
}

/// Polls `condition` every 100 ms (reading a log is not free) until it holds; throws `message`
/// after `timeout`.
func waitUntil(_ message: @autoclosure () -> String, timeout: Duration, _ condition: () throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while try !condition() {
        guard ContinuousClock.now < deadline else { throw TestSystemError("\(message()) (waited \(timeout))") }
        try await Task.sleep(for: .milliseconds(100))
    }
}

/// The request-topic partitions a process owns according to its own log ("partitions assigned:
/// …", "partitions revoked: …", "partitions lost: …" from the group consumer, replayed in order).
/// Of a killed process, this is what it owned when it died.
func ownedPartitions(_ p: ChildProcess, of system: TestSystem) -> Set<String> {
    let requestTopics = ["cart_requests", "order_requests"].map { system.topics.name($0) + "[" }
    var owned: Set<String> = []
    for line in p.log.split(separator: "\n") {
        guard let msg = (try? JSON.parse(Array(line.utf8)))?["msg"]?.string else { continue }
        for (prefix, adds) in [("partitions assigned: ", true), ("partitions revoked: ", false), ("partitions lost: ", false)]
        where msg.hasPrefix(prefix) {
            let tps = msg.dropFirst(prefix.count).components(separatedBy: ", ").filter { tp in requestTopics.contains { tp.hasPrefix($0) } }
            if adds { owned.formUnion(tps) } else { owned.subtract(tps) }
        }
    }
    return owned
}

/// The secrets the system's processes were given: the password of every database connection
/// string in their environment (`DATABASE_URL`, the order service's own included) and the value
/// of every variable whose name says PASSWORD or SECRET (`PGPASSWORD`, …).
func secrets(of system: TestSystem) -> Set<String> {
    var found: Set<String> = []
    for executable in ["order-service", "product-service", "inventory-service"] {
        let env = ProcessInfo.processInfo.environment.merging(system.environment(for: executable)) { _, new in new }
        for (name, value) in env where !value.isEmpty {
            if name.uppercased().contains("PASSWORD") || name.uppercased().contains("SECRET") { found.insert(value) }
            if name.hasSuffix("DATABASE_URL") || value.hasPrefix("postgresql://") || value.hasPrefix("postgres://") {
                if let pw = (try? TestDatabase.parseConnectionString(value))?["password"], !pw.isEmpty { found.insert(pw) }
            }
        }
    }
    return found
}

/// Checks that no secret of `secrets(of:)` appears in any log of the system's processes. A secret
/// that also occurs in a connection string's non-secret parts (the local default: user, password
/// and database all `orders`) legitimately appears in logs (a redacted URL, the database name), so
/// for those only the places a password sits are searched (`:secret@`, `password=secret`).
func expectNoSecretsInLogs(_ system: TestSystem, sourceLocation: SourceLocation = #_sourceLocation) {
    let secrets = secrets(of: system)
    #expect(!secrets.isEmpty, "no password found to look for", sourceLocation: sourceLocation)
    let redactedURLs = ["order-service", "product-service", "inventory-service"].compactMap {
        system.environment(for: $0)["DATABASE_URL"].map { TestDatabase.redacted($0) }
    }
    for secret in secrets {
        let encoded = secret.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? secret
        var needles = [":\(secret)@", ":\(encoded)@", "password=\(secret)", "password='\(secret)'", "PASSWORD=\(secret)"]
        let bare = secret.count >= 4 && !redactedURLs.contains { $0.contains(secret) }
        if bare { needles = [secret, encoded] }
        for p in system.allProcesses {
            let log = p.log
            for needle in Set(needles) where log.contains(needle) {
                Issue.record(
                    "a password (\(secret.count) characters) appears in the log of \(p.name) (\(p.logPath))\(bare ? "" : " after ':' or 'password='")",
                    sourceLocation: sourceLocation)
            }
        }
    }
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

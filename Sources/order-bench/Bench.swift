import ArgumentParser
import Foundation
import Kafka
import Logging
import OrderCore
import Synchronization

/// Load generator for the order service: the request mix of the performance issue, every reply
/// matched by correlation id; reports throughput, latency percentiles, error codes and the
/// service processes' peak RSS and CPU seconds, as a table and as JSON.
@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "order-bench",
        abstract: "Benchmark the order service over Kafka (run it against the local stack with deploy/local/bench.sh).")

    @Option(help: "blast (N requests as fast as possible) or paced (a fixed rate for a fixed time).") var mode = "blast"
    @Option(help: "Requests in blast mode.") var requests = 20_000
    @Option(help: "Requests per second in paced mode.") var rate = 1_000
    @Option(help: "Seconds in paced mode.") var duration = 30
    @Option(help: "Paced mode: the generator wakes every this many ms and sends what is due.") var tickMs = 2
    @Option(help: "Distinct users.") var users = 2_000
    @Option(help: "First user id (default: a fresh range per run, so that runs do not inherit carts and orders).")
    var firstUser: Int?
    @Option(help: "Distinct products (ids 1...N must exist in the catalog).") var products = 200
    @Option(help: "Kafka bootstrap servers.") var bootstrapServers = ProcessInfo.processInfo.environment["KAFKA_BOOTSTRAP_SERVERS"] ?? "localhost:9092"
    @Option(help: "topics.yaml path.") var topicsFile = "topics.yaml"
    @Option(help: "Comma-separated pids of the service instances to measure (RSS, CPU).") var pids = ""
    @Option(help: "Seconds to wait for the last replies.") var replyTimeout = 60
    @Option(help: "Folder for the JSON results file.") var out = ".local/bench"
    @Option(help: "Label stored with the results (e.g. '1 instance').") var label = ""

    func run() async throws {
        var logger = Logger(label: "bench")
        logger.logLevel = .warning
        let topics = try Topics.load(path: topicsFile)
        // KAFKA_* variables reach librdkafka as for the services (e.g. KAFKA_LINGER_MS).
        let kafka = KafkaConfiguration(["bootstrap.servers": bootstrapServers, "linger.ms": "1"])
            .merging(ServiceConfiguration.kafkaEnvironment(ProcessInfo.processInfo.environment))
        let producer = try KafkaProducer(configuration: kafka, logger: logger)
        let tracker = ReplyTracker()

        // Listen on the response topics from their current end, outside any group.
        var listen = kafka
        listen["group.id"] = "order-bench-\(UUID().uuidString.prefix(8))"
        listen["enable.auto.commit"] = "false"
        let consumer = try KafkaConsumer(configuration: listen, logger: logger)
        let counts = try await consumer.topicPartitionCounts()
        var start: [TopicPartition: Int64] = [:]
        for t in [topics.name("cart_responses"), topics.name("order_responses")] {
            for p in 0..<(counts[t] ?? 0) {
                let tp = TopicPartition(t, p)
                start[tp] = try await consumer.watermarks(tp).high
            }
        }
        try consumer.assign(start)
        let reader = Task {
            for await r in consumer.records {
                guard let id = r.header("correlation-id")?.stringValue else { continue }
                tracker.replied(id, value: r.value ?? [])
            }
        }

        let pidList = pids.split(separator: ",").compactMap { Int32($0.trimmingCharacters(in: .whitespaces)) }
        let cpuBefore = pidList.map(ProcStats.cpuSeconds)
        let ownCPUBefore = ProcStats.cpuSeconds(getpid())
        let run = UUID().uuidString.prefix(6).lowercased()
        var generator = SystemRandomNumberGenerator()
        let mix = RequestMix(firstUser: firstUser ?? Int.random(in: 1...100_000) * 100_000, users: users, products: products)
        let began = ContinuousClock.now
        var sent = 0

        func makeRecord(_ n: Int) -> KafkaOutgoingRecord {
            let (topic, body) = mix.next(&generator, topics: topics)
            let id = "b\(run)-\(n)"
            tracker.sent(id, action: body.action)
            return KafkaOutgoingRecord(
                topic: topic, key: Array(String(body.user).utf8), value: body.json(id: id).bytes,
                headers: [KafkaHeader("correlation-id", id)])
        }
        @Sendable func send(_ record: KafkaOutgoingRecord) async {
            do { _ = try await producer.send(record) } catch {
                tracker.sendFailed(record.headers[0].stringValue ?? "")
            }
        }

        if mode == "blast" {
            await withTaskGroup(of: Void.self) { group in
                for n in 0..<requests {
                    let record = makeRecord(n)
                    group.addTask { await send(record) }
                    if n % 1000 == 999 { await Task.yield() }
                }
            }
            sent = requests
        } else {
            let total = rate * duration
            let interval = Duration.seconds(1) / rate
            // Wakes once per tick and sends what is due by then in one task: a timer and a task
            // per request cost the generator 0.2–0.3 core at 1,000 req/s, CPU the system under test
            // shares. Each request's latency still counts from its own send.
            let tick = Duration.milliseconds(tickMs)
            await withTaskGroup(of: Void.self) { group in
                var n = 0
                while n < total {
                    let due = began + interval * n
                    if due > ContinuousClock.now { try? await Task.sleep(until: max(due, ContinuousClock.now + tick)) }
                    let now = ContinuousClock.now
                    var records: [KafkaOutgoingRecord] = []
                    while n < total, began + interval * n <= now {
                        records.append(makeRecord(n))
                        n += 1
                    }
                    group.addTask {
                        // A failed tick counts all its requests as failed sends (their replies, if
                        // any, are then ignored): a run with send failures is not a clean measurement.
                        do { _ = try await producer.sendAll(records) } catch {
                            for r in records { tracker.sendFailed(r.headers[0].stringValue ?? "") }
                        }
                    }
                }
            }
            sent = total
        }
        let deadline = ContinuousClock.now + .seconds(replyTimeout)
        while tracker.answered < sent && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        let finished = tracker.lastReply ?? ContinuousClock.now
        let cpuAfter = pidList.map(ProcStats.cpuSeconds)
        let ownCPU = ProcStats.cpuSeconds(getpid()) - ownCPUBefore
        reader.cancel()
        await consumer.close()
        await producer.close()

        let report = tracker.report(sent: sent, elapsed: finished - began)
        // Windows by send time only mean something when sending is spread over the run.
        let breakdown = tracker.breakdown(began: began, window: mode == "paced" ? 5 : nil)
        var result: [(String, JSON)] = [
            ("label", .string(label)), ("mode", .string(mode)), ("sent", .int(Int64(sent))), ("answered", .int(Int64(report.answered))),
            ("missing", .int(Int64(sent - report.answered))), ("seconds", .number(String(format: "%.3f", report.seconds))),
            ("throughput_rps", .number(String(format: "%.1f", Double(report.answered) / report.seconds))),
            ("latency_ms", .object(report.percentiles.map { ($0.0, .number(String(format: "%.2f", $0.1))) })),
            ("codes", .object(report.codes.sorted { $0.key < $1.key }.map { ($0.key, .int(Int64($0.value))) })),
        ]
        if mode == "paced" { result.append(("rate", .int(Int64(rate)))) }
        var instances: [JSON] = []
        for (i, pid) in pidList.enumerated() {
            instances.append(.object([
                ("pid", .int(Int64(pid))), ("peak_rss_mb", .number(String(format: "%.1f", ProcStats.peakRSSMegabytes(pid)))),
                ("cpu_seconds", .number(String(format: "%.2f", cpuAfter[i] - cpuBefore[i]))),
            ]))
        }
        result.append(("instances", .array(instances)))
        result.append(("generator_cpu_seconds", .number(String(format: "%.2f", ownCPU))))
        result.append(("by_action", .object(breakdown.actions.map { a in
            (a.0, .object([("count", .int(Int64(a.1))), ("p50", .number(String(format: "%.2f", a.2))), ("p99", .number(String(format: "%.2f", a.3)))]))
        })))
        result.append(("by_send_window", .array(breakdown.windows.map { w in
            .object([("from_s", .int(Int64(w.0))), ("count", .int(Int64(w.1))), ("p50", .number(String(format: "%.2f", w.2))), ("p99", .number(String(format: "%.2f", w.3)))])
        })))
        let json = JSON.object(result)

        print("order-bench \(mode)\(label.isEmpty ? "" : " (\(label))")")
        print(String(repeating: "-", count: 44))
        print(String(format: "%-22@ %d / %d", "answered / sent" as NSString, report.answered, sent))
        print(String(format: "%-22@ %.2f s", "elapsed" as NSString, report.seconds))
        print(String(format: "%-22@ %.1f req/s", "throughput" as NSString, Double(report.answered) / report.seconds))
        for (name, v) in report.percentiles { print(String(format: "%-22@ %.2f ms", "latency \(name)" as NSString, v)) }
        for (code, n) in report.codes.sorted(by: { $0.key < $1.key }) { print(String(format: "%-22@ %d", code as NSString, n)) }
        for (action, n, p50, p99) in breakdown.actions {
            print(String(format: "%-22@ %6d  p50 %8.2f ms  p99 %8.2f ms", action as NSString, n, p50, p99))
        }
        for (from, n, p50, p99) in breakdown.windows {
            print(String(format: "%-22@ %6d  p50 %8.2f ms  p99 %8.2f ms", "sent at \(from) s+" as NSString, n, p50, p99))
        }
        for (i, pid) in pidList.enumerated() {
            print(String(format: "%-22@ peak RSS %.1f MB, CPU %.2f s", "instance \(pid)" as NSString, ProcStats.peakRSSMegabytes(pid), cpuAfter[i] - cpuBefore[i]))
        }
        print(String(format: "%-22@ CPU %.2f s", "load generator" as NSString, ownCPU))
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let file = "\(out)/\(ISO8601DateFormatter().string(from: Date()).replacingOccurrences(of: ":", with: ""))-\(mode).json"
        try Data(json.bytes).write(to: URL(fileURLWithPath: file))
        print("results: \(file)")
        print(json.text)
        if report.answered < sent { throw ExitCode(2) }  // a missing reply fails the run
    }
}

struct RequestMix {
    let firstUser: Int
    let users: Int
    let products: Int

    struct Body {
        var action: String
        var user: Int
        var fields: [(String, JSON)]
        func json(id: String) -> JSON {
            .object([("request_id", .string(id)), ("action", .string(action)), ("user_id", .int(Int64(user)))] + fields)
        }
    }

    /// 60% add_item, 15% get_cart, 10% update_item, 5% remove_item, 5% create_order, 5% list_orders.
    func next(_ g: inout SystemRandomNumberGenerator, topics: Topics) -> (String, Body) {
        let user = firstUser + Int.random(in: 0..<users, using: &g)
        let product = Int64(1 + Int.random(in: 0..<products, using: &g))
        let roll = Int.random(in: 0..<100, using: &g)
        switch roll {
        case 0..<60:
            return (topics.cartRequests, Body(action: "add_item", user: user, fields: [("product_id", .int(product)), ("quantity", .int(Int64.random(in: 1...3, using: &g)))]))
        case 60..<75: return (topics.cartRequests, Body(action: "get_cart", user: user, fields: []))
        case 75..<85:
            return (topics.cartRequests, Body(action: "update_item", user: user, fields: [("product_id", .int(product)), ("quantity", .int(Int64.random(in: 1...5, using: &g)))]))
        case 85..<90: return (topics.cartRequests, Body(action: "remove_item", user: user, fields: [("product_id", .int(product))]))
        case 90..<95: return (topics.orderRequests, Body(action: "create_order", user: user, fields: []))
        default: return (topics.orderRequests, Body(action: "list_orders", user: user, fields: []))
        }
    }
}

/// Send times and reply outcomes by correlation id.
final class ReplyTracker: Sendable {
    private struct State {
        var pending: [String: (at: ContinuousClock.Instant, action: String)] = [:]
        /// Per reply: its action, when its request was sent and its latency.
        var samples: [(action: String, sentAt: ContinuousClock.Instant, ms: Double)] = []
        var codes: [String: Int] = [:]
        var answered = 0
        var last: ContinuousClock.Instant?
    }
    private let state = Mutex(State())

    func sent(_ id: String, action: String) { state.withLock { $0.pending[id] = (.now, action) } }
    func sendFailed(_ id: String) { state.withLock { s in _ = s.pending.removeValue(forKey: id); s.codes["send_failed", default: 0] += 1 } }

    func replied(_ id: String, value: [UInt8]) {
        let now = ContinuousClock.now
        var code = "ok"
        if let json = try? JSON.parse(value), case .string(let c)? = json["error"]?["code"] { code = c }
        state.withLock { s in
            guard let sent = s.pending.removeValue(forKey: id) else { return }
            let d = now - sent.at
            let ms = Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
            s.samples.append((sent.action, sent.at, ms))
            s.codes[code, default: 0] += 1
            s.answered += 1
            s.last = now
        }
    }

    var answered: Int { state.withLock { $0.answered } }

    /// p50/p99 per action, and per window of `window` seconds if given (by send time from `began`): shows
    /// which requests are slow and whether latency grows during a run.
    func breakdown(began: ContinuousClock.Instant, window: Int?) -> (actions: [(String, Int, Double, Double)], windows: [(Int, Int, Double, Double)]) {
        state.withLock { s in
            func p50p99(_ v: [Double]) -> (Double, Double) {
                let sorted = v.sorted()
                return (Self.percentile(sorted, 0.5), Self.percentile(sorted, 0.99))
            }
            let byAction = Dictionary(grouping: s.samples, by: \.action).sorted { $0.key < $1.key }.map { kv in
                let (a, b) = p50p99(kv.value.map(\.ms)); return (kv.key, kv.value.count, a, b)
            }
            guard let window else { return (byAction, []) }
            let byWindow = Dictionary(grouping: s.samples) { Int((($0.sentAt - began) / .seconds(window)).rounded(.down)) }
                .sorted { $0.key < $1.key }.map { kv in
                    let (a, b) = p50p99(kv.value.map(\.ms)); return (kv.key * window, kv.value.count, a, b)
                }
            return (byAction, byWindow)
        }
    }
    var lastReply: ContinuousClock.Instant? { state.withLock { $0.last } }

    private static func percentile(_ sorted: [Double], _ q: Double) -> Double {
        sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))]
    }

    func report(sent: Int, elapsed: Duration) -> (answered: Int, seconds: Double, percentiles: [(String, Double)], codes: [String: Int]) {
        state.withLock { s in
            let sorted = s.samples.map(\.ms).sorted()
            func p(_ q: Double) -> Double { Self.percentile(sorted, q) }
            let secs = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            return (s.answered, secs, [("p50", p(0.50)), ("p95", p(0.95)), ("p99", p(0.99)), ("max", sorted.last ?? 0)], s.codes)
        }
    }
}

enum ProcStats {
    /// utime + stime of a process, in seconds.
    static func cpuSeconds(_ pid: Int32) -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let u = Double(fields[11]), let s = Double(fields[12]) else { return 0 }
        return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// VmHWM (peak resident set) of a process, in MB.
    static func peakRSSMegabytes(_ pid: Int32) -> Double {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") })
        else { return 0 }
        let kb = line.split(separator: " ").compactMap { Double($0) }.first ?? 0
        return kb / 1024
    }
}

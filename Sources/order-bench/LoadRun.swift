import ArgumentParser
import Foundation
import Kafka
import Logging
import OrderCore
import Synchronization

/// Load generator for the order service: the request mix of the performance issue, every reply
/// matched by correlation id; reports throughput, latency percentiles, error codes and the
/// service processes' peak RSS, CPU and context switches (in total, per request and per thread
/// group), as a table and as JSON.
struct LoadRun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Send the request mix and measure (the default subcommand).")

    @Option(help: "blast (N requests as fast as possible) or paced (a fixed rate for a fixed time).") var mode = "blast"
    @Option(help: "Requests in blast mode.") var requests = 20_000
    @Option(help: "Requests per second in paced mode.") var rate = 1_000
    @Option(help: "Seconds in paced mode.") var duration = 30
    @Option(help: "Paced mode: the generator wakes every this many ms and sends what is due.") var tickMs = 2
    @Option(help: "Paced mode: latency is also reported by send time in windows of this many seconds.") var windowSeconds = 5
    @Option(help: "Distinct users.") var users = 2_000
    @Option(help: "First user id (default: a fresh range per run, so that runs do not inherit carts and orders).")
    var firstUser: Int?
    @Option(help: "Distinct products (ids 1...N must exist in the catalog).") var products = 200
    @Option(help: "Requests: contract (the issue's mix), invalid (refused by validation: no database, no upstream), get_cart (the cart batch, no upstream) or add_item (with the Product Service look-up).")
    var mix = "contract"
    @Option(help: "Kafka bootstrap servers.") var bootstrapServers = ProcessInfo.processInfo.environment["KAFKA_BOOTSTRAP_SERVERS"] ?? "localhost:9092"
    @Option(help: "topics.yaml path.") var topicsFile = "topics.yaml"
    @Option(help: "Comma-separated pids of the service instances to measure (RSS, CPU, context switches).") var pids = ""
    @Option(help: "Other processes whose CPU to report, as name=pid (repeatable; e.g. broker=1234).") var watch: [String] = []
    @Option(help: "Seconds to wait for the last replies.") var replyTimeout = 60
    @Option(help: "Folder for the JSON results file.") var out = ".local/bench"
    @Option(help: "Label stored with the results (e.g. '1 instance').") var label = ""

    func validate() throws {
        guard RequestMix.Kind(rawValue: mix) != nil else {
            throw ValidationError("--mix must be one of \(RequestMix.Kind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
    }

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
        // The services' metrics records too: their own handling time per window (`latency_ms`),
        // the latency the service adds besides the broker's hops to and from it.
        let metricsTopic = topics.metricsTopic
        for t in [topics.name("cart_responses"), topics.name("order_responses")] + (metricsTopic.map { [$0] } ?? []) {
            for p in 0..<(counts[t] ?? 0) {
                let tp = TopicPartition(t, p)
                start[tp] = try await consumer.watermarks(tp).high
            }
        }
        try consumer.assign(start)
        let probePrefix = "probe-\(UUID().uuidString.prefix(6).lowercased())-"
        let probesLeft = Mutex(Set<String>())
        let serviceWindows = Mutex<[(at: ContinuousClock.Instant, json: JSON)]>([])
        let reader = Task {
            for await r in consumer.records {
                if r.topic == metricsTopic {
                    if let v = r.value, let json = try? JSON.parse(v) { serviceWindows.withLock { $0.append((.now, json)) } }
                    continue
                }
                guard let id = r.header("correlation-id")?.stringValue else { continue }
                if id.hasPrefix(probePrefix) {
                    _ = probesLeft.withLock { $0.remove(id) }
                    continue
                }
                tracker.replied(id, value: r.value ?? [])
            }
        }
        // The generator's own start-up (its producer's first metadata and connections, its
        // reader's first fetches) is not the system's latency: a few requests are answered before
        // the measured run starts. Not counted anywhere.
        // A get_cart and a list_orders of each of the first users (enough to touch every partition
        // of both request topics and both response topics), all at once.
        let mix = RequestMix(
            firstUser: firstUser ?? Int.random(in: 1...100_000) * 100_000, users: users, products: products,
            kind: RequestMix.Kind(rawValue: self.mix) ?? .contract)
        let probeIds = (0..<2 * min(users, 50)).map { "\(probePrefix)\($0)" }
        probesLeft.withLock { $0 = Set(probeIds) }
        _ = try? await producer.sendAll(probeIds.enumerated().map { i, id in
            let (topic, action) = i % 2 == 0 ? (topics.cartRequests, "get_cart") : (topics.orderRequests, "list_orders")
            let body = RequestMix.Body(action: action, user: mix.firstUser + i / 2, fields: [])
            return KafkaOutgoingRecord(
                topic: topic, key: Array(String(body.user).utf8), value: body.json(id: id).bytes,
                headers: [KafkaHeader("correlation-id", id)])
        })
        let probeDeadline = ContinuousClock.now + .seconds(30)
        while !probesLeft.withLock({ $0.isEmpty }), ContinuousClock.now < probeDeadline { try await Task.sleep(for: .milliseconds(10)) }
        if !probesLeft.withLock({ $0.isEmpty }) { print("warning: readiness probes not answered within 30 s; measuring anyway") }

        let pidList = pids.split(separator: ",").compactMap { Int32($0.trimmingCharacters(in: .whitespaces)) }
        let watched: [(name: String, pid: Int32)] = watch.compactMap { w in
            guard let eq = w.firstIndex(of: "="), let pid = Int32(w[w.index(after: eq)...]) else { return nil }
            return (String(w[..<eq]), pid)
        }
        let before = pidList.map(ProcStats.sample)
        let watchedBefore = watched.map { ProcStats.cpuSeconds($0.pid) }
        let ownCPUBefore = ProcStats.cpuSeconds(getpid())
        let run = UUID().uuidString.prefix(6).lowercased()
        var generator = SystemRandomNumberGenerator()
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
        let after = pidList.map(ProcStats.sample)
        let watchedCPU = zip(watched, watchedBefore).map { w, b in (w.name, ProcStats.cpuSeconds(w.pid) - b) }
        let deltas = zip(before, after).map { ProcStats.delta($0, $1) }
        let ownCPU = ProcStats.cpuSeconds(getpid()) - ownCPUBefore
        reader.cancel()
        await consumer.close()
        await producer.close()

        let report = tracker.report(sent: sent, elapsed: finished - began)
        // Windows by send time only mean something when sending is spread over the run.
        let breakdown = tracker.breakdown(began: began, window: mode == "paced" ? max(1, windowSeconds) : nil)
        var result: [(String, JSON)] = [
            ("label", .string(label)), ("mode", .string(mode)), ("mix", .string(self.mix)), ("sent", .int(Int64(sent))), ("answered", .int(Int64(report.answered))),
            ("missing", .int(Int64(sent - report.answered))), ("duplicates", .int(Int64(tracker.duplicates))), ("seconds", .number(String(format: "%.3f", report.seconds))),
            ("throughput_rps", .number(String(format: "%.1f", Double(report.answered) / report.seconds))),
            ("latency_ms", .object(report.percentiles.map { ($0.0, .number(String(format: "%.2f", $0.1))) })),
            ("codes", .object(report.codes.sorted { $0.key < $1.key }.map { ($0.key, .int(Int64($0.value))) })),
        ]
        if mode == "paced" { result.append(("rate", .int(Int64(rate)))) }
        // Metrics windows that lie within the measured run: sent after a whole window had passed
        // since it began, and not after the last reply.
        let handling: [(instance: String, seconds: Double, requests: Int64, p50: Double, p99: Double)] = serviceWindows.withLock { $0 }.compactMap { w in
            // Checked like any record read from a topic: a value out of range is skipped, not trusted.
            guard case .number(let secondsText)? = w.json["window_seconds"], let seconds = Double(secondsText),
                seconds.isFinite, seconds >= 0, seconds <= 86_400
            else { return nil }
            // `window_seconds` is written in whole seconds: a second more, so no warm-up leaks in.
            guard w.at - .seconds(seconds + 1) >= began, w.at <= finished + .seconds(1) else { return nil }
            guard case .object(let lat)? = w.json["latency_ms"] else { return nil }
            func value(_ k: String) -> Double? {
                guard case .number(let t)? = lat.first(where: { $0.0 == k })?.1 else { return nil }
                return Double(t)
            }
            var count: Int64 = 0
            if case .object(let reqs)? = w.json["requests"] {
                for (_, v) in reqs { if case .int(let n) = v, n >= 0 { count = count &+ n } }
            }
            guard let p50 = value("p50"), let p99 = value("p99"), p50.isFinite, p99.isFinite else { return nil }
            var instance = ""
            if case .string(let i)? = w.json["instance"] { instance = i }
            return (instance, seconds, count, p50, p99)
        }
        result.append(("service_handling_windows", .array(handling.map { h in
            .object([
                ("instance", .string(h.instance)), ("seconds", .number(String(format: "%.1f", h.seconds))), ("requests", .int(h.requests)),
                ("p50_ms", .number(String(format: "%.2f", h.p50))), ("p99_ms", .number(String(format: "%.2f", h.p99))),
            ])
        })))
        // Per request: over the answered requests of the measured run (the warm-up is outside it).
        let perRequest = Double(max(report.answered, 1))
        func f(_ format: String, _ v: Double) -> JSON { .number(String(format: format, v)) }
        var instances: [JSON] = []
        for (i, pid) in pidList.enumerated() {
            let d = deltas[i]
            instances.append(.object([
                ("pid", .int(Int64(pid))), ("peak_rss_mb", f("%.1f", ProcStats.peakRSSMegabytes(pid))),
                ("cpu_seconds", f("%.2f", d.cpuSeconds)), ("cpu_us_per_request", f("%.1f", d.cpuSeconds * 1e6 / perRequest)),
                ("voluntary_switches", .int(Int64(d.voluntary))), ("involuntary_switches", .int(Int64(d.involuntary))),
                ("switches_per_request", f("%.2f", Double(d.switches) / perRequest)),
                ("threads", .array(d.groups.map { g in
                    .object([
                        ("name", .string(g.name)), ("threads", .int(Int64(g.threads))), ("cpu_seconds", f("%.3f", g.cpuSeconds)),
                        ("switches", .int(Int64(g.switches))),
                    ])
                })),
            ]))
        }
        result.append(("instances", .array(instances)))
        let serviceCPU = deltas.reduce(0) { $0 + $1.cpuSeconds }
        let serviceSwitches = deltas.reduce(0) { $0 + $1.switches }
        result.append(("service_cpu_us_per_request", f("%.1f", serviceCPU * 1e6 / perRequest)))
        result.append(("service_switches_per_request", f("%.2f", Double(serviceSwitches) / perRequest)))
        result.append(("watched_cpu_seconds", .object(watchedCPU.map { ($0.0, f("%.2f", $0.1)) })))
        result.append(("generator_cpu_seconds", .number(String(format: "%.2f", ownCPU))))
        result.append(("by_action", .object(breakdown.actions.map { a in
            (a.0, .object([("count", .int(Int64(a.1))), ("p50", .number(String(format: "%.2f", a.2))), ("p99", .number(String(format: "%.2f", a.3)))]))
        })))
        result.append(("by_send_window", .array(breakdown.windows.map { w in
            .object([("from_s", .int(Int64(w.0))), ("count", .int(Int64(w.1))), ("p50", .number(String(format: "%.2f", w.2))), ("p99", .number(String(format: "%.2f", w.3)))])
        })))
        let json = JSON.object(result)

        print("order-bench \(mode)\(self.mix == "contract" ? "" : ", mix \(self.mix)")\(label.isEmpty ? "" : " (\(label))")")
        print(String(repeating: "-", count: 44))
        print(String(format: "%-22@ %d / %d", "answered / sent" as NSString, report.answered, sent))
        print(String(format: "%-22@ %d", "duplicate replies" as NSString, tracker.duplicates))
        print(String(format: "%-22@ %.2f s", "elapsed" as NSString, report.seconds))
        print(String(format: "%-22@ %.1f req/s", "throughput" as NSString, Double(report.answered) / report.seconds))
        for (name, v) in report.percentiles { print(String(format: "%-22@ %.2f ms", "latency \(name)" as NSString, v)) }
        for h in handling {
            print(String(
                format: "%-22@ p50 %.2f ms, p99 %.2f ms (%.0f s, %lld requests, %@)", "service handling" as NSString, h.p50, h.p99, h.seconds,
                h.requests, h.instance as NSString))
        }
        for (code, n) in report.codes.sorted(by: { $0.key < $1.key }) { print(String(format: "%-22@ %d", code as NSString, n)) }
        for (action, n, p50, p99) in breakdown.actions {
            print(String(format: "%-22@ %6d  p50 %8.2f ms  p99 %8.2f ms", action as NSString, n, p50, p99))
        }
        for (from, n, p50, p99) in breakdown.windows {
            print(String(format: "%-22@ %6d  p50 %8.2f ms  p99 %8.2f ms", "sent at \(from) s+" as NSString, n, p50, p99))
        }
        for (i, pid) in pidList.enumerated() {
            let d = deltas[i]
            print(String(format: "%-22@ peak RSS %.1f MB, CPU %.2f s", "instance \(pid)" as NSString, ProcStats.peakRSSMegabytes(pid), d.cpuSeconds))
            print(String(
                format: "%-22@ %.1f µs CPU, %.2f context switches (%.2f voluntary)", "  per request" as NSString,
                d.cpuSeconds * 1e6 / perRequest, Double(d.switches) / perRequest, Double(d.voluntary) / perRequest))
            for g in d.groups.prefix(12) where g.cpuSeconds >= 0.005 || g.switches > 0 {
                print(String(
                    format: "%-22@ %2d thr  CPU %6.2f s  %6.1f µs/req  %6.2f sw/req", "    \(g.name)" as NSString, g.threads,
                    g.cpuSeconds, g.cpuSeconds * 1e6 / perRequest, Double(g.switches) / perRequest))
            }
        }
        if !pidList.isEmpty {
            print(String(
                format: "%-22@ %.1f µs CPU, %.2f context switches", "service per request" as NSString, serviceCPU * 1e6 / perRequest,
                Double(serviceSwitches) / perRequest))
        }
        for (name, cpu) in watchedCPU {
            print(String(format: "%-22@ CPU %.2f s, %.1f µs per request", name as NSString, cpu, cpu * 1e6 / perRequest))
        }
        print(String(format: "%-22@ CPU %.2f s", "load generator" as NSString, ownCPU))
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let file = "\(out)/\(ISO8601DateFormatter().string(from: Date()).replacingOccurrences(of: ":", with: ""))-\(mode).json"
        try Data(json.bytes).write(to: URL(fileURLWithPath: file))
        print("results: \(file)")
        print(json.text)
        if report.answered < sent || tracker.duplicates > 0 { throw ExitCode(2) }  // a missing or doubled reply fails the run
    }
}


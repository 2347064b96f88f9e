import CRdKafka
import Dispatch
import Foundation
import Logging
import Synchronization

/// Serves librdkafka's rebalance callback (consumer groups only).
protocol RdKafkaRebalanceHandler: AnyObject, Sendable {
    func rebalance(
        _ rk: OpaquePointer, _ err: rd_kafka_resp_err_t, _ partitions: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>)
}

/// Swift-side state that librdkafka's C callbacks reach through the client's opaque pointer.
/// Everything is fixed before the handle exists, so callbacks on librdkafka's threads read
/// immutable state only.
final class RdKafkaCallbacks: Sendable {
    let logger: Logger
    let rebalance: (any RdKafkaRebalanceHandler)?
    /// Statistics JSON (`statistics.interval.ms`), handed over as a String.
    let onStatistics: (@Sendable (String) -> Void)?

    init(
        logger: Logger, rebalance: (any RdKafkaRebalanceHandler)? = nil,
        onStatistics: (@Sendable (String) -> Void)? = nil
    ) {
        self.logger = logger
        self.rebalance = rebalance
        self.onStatistics = onStatistics
    }
}

/// Owns one `rd_kafka_t` and the callbacks object it points at; `deinit` destroys the handle.
final class RdKafkaClient: @unchecked Sendable {
    let handle: OpaquePointer
    let callbacks: RdKafkaCallbacks
    let kind: rd_kafka_type_t

    init(
        kind: rd_kafka_type_t, configuration: KafkaConfiguration, callbacks: RdKafkaCallbacks,
        configure: (OpaquePointer) -> Void = { _ in }
    ) throws {
        try LibRdKafka.requireSupportedVersion()
        guard let conf = rd_kafka_conf_new() else { throw KafkaError.configuration("rd_kafka_conf_new failed") }
        var errstr = [CChar](repeating: 0, count: 512)
        for (key, value) in configuration.properties.sorted(by: { $0.key < $1.key }) {
            if rd_kafka_conf_set(conf, key, value, &errstr, errstr.count) != RD_KAFKA_CONF_OK {
                rd_kafka_conf_destroy(conf)
                throw KafkaError.configuration("invalid Kafka property \(key): \(string(fromBuffer: errstr))")
            }
        }
        rd_kafka_conf_set_opaque(conf, Unmanaged.passUnretained(callbacks).toOpaque())
        rd_kafka_conf_set_log_cb(conf) { rk, level, facility, message in
            guard let rk, let opaque = rd_kafka_opaque(rk) else { return }
            let cb = Unmanaged<RdKafkaCallbacks>.fromOpaque(opaque).takeUnretainedValue()
            let fac = facility.map { String(cString: $0) } ?? ""
            let text = message.map { String(cString: $0) } ?? ""
            cb.logger.log(level: RdKafkaLogLevel.level(syslog: level, facility: fac, message: text), "\(fac): \(text)")
        }
        rd_kafka_conf_set_error_cb(conf) { rk, err, reason, _ in
            guard let rk, let opaque = rd_kafka_opaque(rk) else { return }
            let cb = Unmanaged<RdKafkaCallbacks>.fromOpaque(opaque).takeUnretainedValue()
            if err == RD_KAFKA_RESP_ERR__FATAL.rawValue {
                // The handle is unusable from now on; name the underlying error.
                var buf = [CChar](repeating: 0, count: 512)
                let fatal = rd_kafka_fatal_error(rk, &buf, buf.count)
                cb.logger.error("librdkafka fatal error: \(String(cString: rd_kafka_err2name(fatal))): \(string(fromBuffer: buf))")
                return
            }
            let why = reason.map { String(cString: $0) } ?? ""
            cb.logger.warning("librdkafka: \(String(cString: rd_kafka_err2name(rd_kafka_resp_err_t(err)))): \(why)")
        }
        rd_kafka_conf_set_stats_cb(conf) { rk, json, len, _ in
            guard let rk, let json, let opaque = rd_kafka_opaque(rk) else { return 0 }
            let cb = Unmanaged<RdKafkaCallbacks>.fromOpaque(opaque).takeUnretainedValue()
            cb.onStatistics?(String(decoding: UnsafeRawBufferPointer(start: json, count: len), as: UTF8.self))
            return 0  // 0: librdkafka frees the JSON buffer
        }
        configure(conf)
        // On success rd_kafka_new owns conf; on failure the caller still does.
        guard let rk = rd_kafka_new(kind, conf, &errstr, errstr.count) else {
            rd_kafka_conf_destroy(conf)
            throw KafkaError.configuration("cannot create Kafka client: \(string(fromBuffer: errstr))")
        }
        self.handle = rk
        self.callbacks = callbacks
        self.kind = kind
    }

    deinit { rd_kafka_destroy(handle) }

    /// Cluster metadata: topic name → partition count. Blocking; call from `runBlocking`.
    func metadataBlocking(timeoutMs: Int32) throws -> [String: Int32] {
        var md: UnsafePointer<rd_kafka_metadata>?
        let err = rd_kafka_metadata(handle, 1, nil, &md, timeoutMs)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR, let md else { throw KafkaError(err, context: "metadata") }
        defer { rd_kafka_metadata_destroy(md) }
        var out: [String: Int32] = [:]
        // Counts as the broker sent them: a broken one could send -1 (a null array); read as none.
        guard let topics = md.pointee.topics else { return out }
        for i in 0..<max(0, Int(md.pointee.topic_cnt)) {
            let t = topics[i]
            guard t.err == RD_KAFKA_RESP_ERR_NO_ERROR, let name = t.topic else { continue }
            out[String(cString: name)] = max(0, t.partition_cnt)
        }
        return out
    }
}

/// A NUL-terminated C string in a buffer librdkafka filled.
func string(fromBuffer buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Runs a blocking C call on a Dispatch thread, never on Swift's cooperative pool.
func runBlocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { cont in
        DispatchQueue.global().async {
            do { cont.resume(returning: try body()) } catch { cont.resume(throwing: error) }
        }
    }
}

/// A dedicated thread that calls `body` until stopped; used to serve librdkafka's poll loop.
final class PollThread: Sendable {
    private let stopFlag = Atomic<Bool>(false)
    private let finished = Mutex<(done: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    init(name: String, body: @escaping @Sendable (PollThread) -> Void, onExit: @escaping @Sendable () -> Void = {}) {
        // The OS name (15 bytes: "kafka-consumer-", "kafka-producer-", "kafka-admin-pol") is what
        // profiles and /proc show.
        let osName = String(decoding: name.utf8.prefix(15), as: UTF8.self)
        let thread = Thread { [self] in
            swift_rd_kafka_name_current_thread(osName)
            body(self)
            onExit()
            let waiters = finished.withLock { state -> [CheckedContinuation<Void, Never>] in
                state.done = true
                defer { state.waiters = [] }
                return state.waiters
            }
            waiters.forEach { $0.resume() }
        }
        thread.name = name
        thread.start()
    }

    var isStopRequested: Bool { stopFlag.load(ordering: .acquiring) }

    func requestStop() { stopFlag.store(true, ordering: .releasing) }

    /// Requests a stop and waits until the loop has exited.
    func stop() async {
        requestStop()
        await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in
            let done = finished.withLock { state -> Bool in
                if state.done { return true }
                state.waiters.append(cont)
                return false
            }
            if done { cont.resume() }
        }
    }
}

extension rd_kafka_topic_partition_list_t {
    var topicPartitions: [TopicPartition] {
        (0..<Int(cnt)).map { i in TopicPartition(String(cString: elems[i].topic), elems[i].partition) }
    }
}

/// Builds an `rd_kafka_topic_partition_list_t` that lives exactly as long as `body` runs.
/// (An owning object whose `pointer` is read could be freed before the C call that uses it.)
func withPartitionList<R>(
    _ partitions: [TopicPartition], offsets: [Int64]? = nil,
    _ body: (UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) throws -> R
) rethrows -> R {
    let list = rd_kafka_topic_partition_list_new(Int32(max(partitions.count, 1)))!
    defer { rd_kafka_topic_partition_list_destroy(list) }
    for (i, tp) in partitions.enumerated() {
        let elem = rd_kafka_topic_partition_list_add(list, tp.topic, tp.partition)
        if let offsets { elem?.pointee.offset = offsets[i] }
    }
    return try body(list)
}

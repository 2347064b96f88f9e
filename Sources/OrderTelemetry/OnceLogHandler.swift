import Foundation
import Logging
import Metrics
import OrderCore
import Synchronization

/// swift-otel's diagnostic logger: a collector that is down would make the exporters warn once per
/// batch (every few seconds, for ever). Each distinct warning is logged the first time, then at
/// most once per `every` with the number of repeats held back; spans dropped because the queue
/// was full are added up (`droppedSpans`).
struct OnceLogHandler: LogHandler {
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info
    let base: any LogHandler
    let state: Shared

    final class Shared: Sendable {
        let every: Duration
        let seen = Mutex<[String: (last: ContinuousClock.Instant, held: Int)]>([:])
        let droppedSpans = Atomic<Int>(0)
        init(every: Duration) { self.every = every }
    }

    init(base: any LogHandler, state: Shared) {
        self.base = base
        self.state = state
        self.logLevel = base.logLevel
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var all = metadata
        if let extra = event.metadata { all.merge(extra) { _, new in new } }
        if case .string(let n)? = all["dropped_count"], let dropped = Int(n), dropped > 0 {
            state.droppedSpans.add(dropped, ordering: .relaxed)
            // Rare (a full queue): the registry hands back the same instrument each time.
            if Telemetry.isMetering { Counter(label: "order_service.telemetry.spans.dropped", dimensions: [("unit", "{span}")]).increment(by: dropped) }
        }
        guard event.level >= .warning else {
            base.log(event: LogEvent(level: event.level, message: event.message, metadata: all, source: event.source, file: event.file, function: event.function, line: event.line))
            return
        }
        let key = event.message.description
        let now = ContinuousClock.now
        let held: Int? = state.seen.withLock { seen in
            if let s = seen[key], now - s.last < state.every {
                seen[key] = (s.last, s.held + 1)
                return nil
            }
            let before = seen[key]?.held ?? 0
            seen[key] = (now, 0)
            return before
        }
        guard let held else { return }
        // Per-batch details (ids, sizes) would make every line different; the first one's are kept.
        all["batch_id"] = nil
        all["suppressed_since_last"] = "\(held)"
        all["note"] = "repeats of this telemetry warning are logged at most every \(state.every)"
        base.log(event: LogEvent(level: event.level, message: event.message, metadata: all, source: event.source, file: event.file, function: event.function, line: event.line))
    }
}

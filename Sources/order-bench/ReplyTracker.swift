import Foundation
import OrderCore
import Synchronization

/// Send times and reply outcomes by correlation id.
final class ReplyTracker: Sendable {
    private struct State {
        var pending: [String: (at: ContinuousClock.Instant, action: String)] = [:]
        /// Per reply: its action, when its request was sent and its latency.
        var samples: [(action: String, sentAt: ContinuousClock.Instant, ms: Double)] = []
        var codes: [String: Int] = [:]
        var answered = 0
        /// Correlation ids answered so far, to count a second reply to one request.
        var answeredIds: Set<String> = []
        var duplicates = 0
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
            guard let sent = s.pending.removeValue(forKey: id) else {
                if s.answeredIds.contains(id) { s.duplicates += 1 }
                return
            }
            s.answeredIds.insert(id)
            let d = now - sent.at
            let ms = Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
            s.samples.append((sent.action, sent.at, ms))
            s.codes[code, default: 0] += 1
            s.answered += 1
            s.last = now
        }
    }

    var answered: Int { state.withLock { $0.answered } }
    /// Replies to requests that had been answered already (the contract wants exactly one).
    var duplicates: Int { state.withLock { $0.duplicates } }

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

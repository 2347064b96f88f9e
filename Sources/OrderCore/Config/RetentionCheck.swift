import Foundation
import Kafka

/// Compares the request topics' retention with the idempotency retention (contract 9.1).
///
/// When the group's committed offsets are lost (a new group id, expired group offsets), the
/// service reads the request topics from the earliest offset again. A record still in the topic
/// whose stored reply has already expired is then processed as new and its effect applied twice.
/// So replies must be remembered at least as long as request records are kept.
public enum RetentionCheck {
    /// A topic's `retention.ms` as the broker reports it.
    public enum Retention: Sendable, Equatable {
        case finite(milliseconds: Int64)
        /// `retention.ms` -1: records are never deleted by age.
        case infinite
        /// The broker did not say (Tansu reports only configs set at creation), or asking failed.
        case unknown(reason: String)

        /// Reads a `retention.ms` value; nil: the broker sent none.
        public init(configValue value: String?) {
            guard let value else {
                self = .unknown(reason: "the broker reports no retention.ms for it")
                return
            }
            switch Int64(value) {
            case let ms? where ms < 0: self = .infinite
            case let ms?: self = .finite(milliseconds: ms)
            case nil: self = .unknown(reason: "retention.ms is not a number: \(value)")
            }
        }

        public var description: String {
            switch self {
            case .finite(let ms): "\(ms) ms (\(Self.hours(ms)) h)"
            case .infinite: "infinite (-1)"
            case .unknown(let reason): "unknown (\(reason))"
            }
        }

        static func hours(_ ms: Int64) -> String {
            let h = Double(ms) / 3_600_000
            return h == h.rounded() ? String(Int64(h)) : String(format: "%.1f", h)
        }
    }

    public enum Finding: Sendable, Equatable {
        /// Records are kept longer than their replies: a replay from the earliest offset can
        /// apply effects again.
        case keptLongerThanReplies(topic: String, retention: Retention, idempotencyRetentionHours: Int)
        /// The topic's retention could not be read; nothing was compared.
        case unreadable(topic: String, reason: String)

        public var isReplayRisk: Bool { if case .keptLongerThanReplies = self { true } else { false } }

        public var message: String {
            switch self {
            case .keptLongerThanReplies(let topic, let retention, let hours):
                let needed: String
                let most = RetentionCheck.milliseconds(hours: hours)
                if case .finite(let ms) = retention {
                    // Hours rounded up, without `ms + 3_599_999` (retention.ms may be near Int64.max).
                    let hoursNeeded = ms / 3_600_000 + (ms % 3_600_000 == 0 ? 0 : 1)
                    needed = "set ORDER_SERVICE_IDEMPOTENCY_RETENTION_HOURS to at least \(hoursNeeded) or lower the topic's retention.ms to at most \(most)"
                } else {
                    needed = "give the topic a finite retention.ms of at most \(most) (no idempotency retention covers an infinite one)"
                }
                return "request topic \(topic) keeps records for \(retention.description), but replies are remembered for only "
                    + "\(hours) h (ORDER_SERVICE_IDEMPOTENCY_RETENTION_HOURS): if the group's offsets are lost, a replay from the "
                    + "earliest offset applies the older records' effects again; \(needed)"
            case .unreadable(let topic, let reason):
                return "retention of request topic \(topic) could not be read (\(reason)): make sure its retention.ms is at most "
                    + "ORDER_SERVICE_IDEMPOTENCY_RETENTION_HOURS"
            }
        }
    }

    /// One finding per request topic that keeps records longer than replies are remembered, or
    /// whose retention is unknown; none for a topic within the idempotency retention.
    public static func findings(_ retentions: [String: Retention], idempotencyRetentionHours hours: Int) -> [Finding] {
        let limit = milliseconds(hours: hours)
        return retentions.sorted { $0.key < $1.key }.compactMap { topic, retention in
            switch retention {
            case .finite(let ms) where ms <= limit: nil
            case .finite, .infinite: .keptLongerThanReplies(topic: topic, retention: retention, idempotencyRetentionHours: hours)
            case .unknown(let reason): .unreadable(topic: topic, reason: reason)
            }
        }
    }

    /// `hours` in milliseconds, at most Int64.max (the hours come from the environment unbounded).
    static func milliseconds(hours: Int) -> Int64 {
        let (ms, overflow) = Int64(clamping: hours).multipliedReportingOverflow(by: 3_600_000)
        return overflow ? (hours < 0 ? 0 : .max) : ms
    }

    /// Each request topic's retention from a DescribeConfigs answer (nil: the request failed).
    public static func retentions(
        of topics: [String], described: [String: KafkaAdmin.ConfigsOutcome]?, failure: String? = nil
    ) -> [String: Retention] {
        var out: [String: Retention] = [:]
        for topic in topics {
            switch described?[topic] {
            case .configs(let configs)?: out[topic] = Retention(configValue: configs["retention.ms"])
            case .failed(let error)?: out[topic] = .unknown(reason: error.message)
            case nil: out[topic] = .unknown(reason: failure ?? "no answer for the topic")
            }
        }
        return out
    }
}

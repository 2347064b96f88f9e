import Kafka
import Logging
import ServiceLifecycle

/// Re-creates topics of topics.yaml that vanish (a broker that lost its data, a deleted topic)
/// and then makes sure this instance's group consumer is not left without partitions.
///
/// After such a re-creation the group may settle on an empty assignment computed while the topics
/// were missing (seen with Tansu after it lost its state: the only member got no partitions,
/// nothing triggered another rebalance, and rejoining did not help because the consumer's metadata
/// stayed stale). So for `window` after this instance re-created topics, an empty assignment makes
/// it rejoin the group (after `rejoinAfter`); if that yields nothing within `replaceAfter`, it
/// replaces the group consumer with a fresh one (new metadata; the old one owns nothing, so
/// nothing is revoked or drained) and then gives the fresh one `settleAfterReplace` — at least the
/// rebalance timeout — before acting again: replacing members faster than the group can settle
/// would keep it rebalancing forever.
struct TopicRecovery: Service {
    let topics: Topics
    let manager: TopicManager
    /// The group consumer in use now.
    let consumer: @Sendable () -> KafkaConsumer?
    /// Installs a fresh group consumer in place of `old` (which it closes).
    let replace: @Sendable (_ old: KafkaConsumer) async throws -> Void
    let logger: Logger
    var checkEvery: Duration = .seconds(5)
    var window: Duration = .seconds(300)
    var rejoinAfter: Duration = .seconds(5)
    var replaceAfter: Duration = .seconds(15)
    var settleAfterReplace: Duration = .seconds(75)

    /// As a service: checks until the graceful shutdown, which it ends at once (no consumer is
    /// replaced while the consumer drains).
    func run() async throws {
        try? await cancelWhenGracefulShutdown { try await watch() }
    }

    func watch() async throws {
        var recreated: ContinuousClock.Instant?
        var nextAction: ContinuousClock.Instant?
        var rejoined = false
        while !Task.isCancelled {
            try await Task.sleep(for: checkEvery)
            if let report = try? await manager.ensure(topics, timeout: .seconds(5), warnMismatches: false), !report.created.isEmpty {
                recreated = .now
            }
            guard let since = recreated, let current = consumer() else { continue }
            let now = ContinuousClock.now
            if now - since > window || !current.assignment.isEmpty {
                if now - since > window { recreated = nil }
                rejoined = false
                nextAction = nil
                continue
            }
            guard now - since >= rejoinAfter, nextAction.map({ now >= $0 }) ?? true else { continue }
            if !rejoined {
                logger.warning("topics were re-created and this instance owns no partitions: rejoining the group")
                do { try current.resubscribe() } catch { logger.warning("rejoin failed: \(error)") }
                rejoined = true
                nextAction = now + replaceAfter
            } else if !Task.isCancelled {
                logger.warning("still no partitions after rejoining: replacing the group consumer")
                do { try await replace(current) } catch { logger.warning("replacing the group consumer failed: \(error)") }
                rejoined = false
                nextAction = ContinuousClock.now + settleAfterReplace
            }
        }
    }
}

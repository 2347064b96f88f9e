import Kafka
import Logging

/// Re-creates topics of topics.yaml that vanish (a broker that lost its data, a deleted topic)
/// and then makes sure this instance's group consumer is not left without partitions.
///
/// After such a re-creation the group may settle on an empty assignment computed while the topics
/// were missing (seen with Tansu after it lost its state: the only member got no partitions,
/// nothing triggered another rebalance, and rejoining did not help because the consumer's metadata
/// stayed stale). So for `window` after this instance re-created topics, an empty assignment makes
/// it rejoin the group (after `rejoinAfter`), and if it is still empty `replaceAfter` later,
/// replace the group consumer with a fresh one (new metadata). The old one owns nothing, so
/// nothing is revoked or drained.
struct TopicRecovery: Sendable {
    let topics: Topics
    let manager: TopicManager
    /// The group consumer in use now.
    let consumer: @Sendable () -> KafkaConsumer?
    /// Makes, subscribes and installs a fresh group consumer, and closes `old`.
    let replace: @Sendable (_ old: KafkaConsumer) throws -> Void
    let logger: Logger
    var checkEvery: Duration = .seconds(5)
    var window: Duration = .seconds(120)
    var rejoinAfter: Duration = .seconds(5)
    var replaceAfter: Duration = .seconds(15)

    func run() async throws {
        var recreated: ContinuousClock.Instant?
        var lastAction: ContinuousClock.Instant?
        var rejoined = false
        while !Task.isCancelled {
            try await Task.sleep(for: checkEvery)
            if let report = try? await manager.ensure(topics, timeout: .seconds(5), warnMismatches: false), !report.created.isEmpty {
                recreated = .now
            }
            guard let since = recreated, let current = consumer() else { continue }
            let now = ContinuousClock.now
            if now - since > window {
                recreated = nil
                rejoined = false
                continue
            }
            if !current.assignment.isEmpty {
                rejoined = false
                continue
            }
            guard now - since >= rejoinAfter, lastAction.map({ now - $0 >= replaceAfter }) ?? true else { continue }
            lastAction = now
            if !rejoined {
                logger.warning("topics were re-created and this instance owns no partitions: rejoining the group")
                do { try current.resubscribe() } catch { logger.warning("rejoin failed: \(error)") }
                rejoined = true
            } else if !Task.isCancelled {
                logger.warning("still no partitions after rejoining: replacing the group consumer")
                do { try replace(current) } catch { logger.warning("replacing the group consumer failed: \(error)") }
                rejoined = false
            }
        }
    }
}

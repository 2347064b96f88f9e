import Logging
import ServiceLifecycle
import Synchronization
import Testing

@testable import OrderCore

/// The order in which the running service's parts stop (`ServiceLineup` in a `ServiceGroup`),
/// with stand-in services: no broker, no database.
@Suite("ServiceLineup: graceful shutdown order", .timeLimit(.minutes(1)))
struct ServiceLineupTests {
    /// What the stand-ins did, in order.
    final class Journal: Sendable {
        private let entries = Mutex<[String]>([])
        func add(_ entry: String) { entries.withLock { $0.append(entry) } }
        var all: [String] { entries.withLock { $0 } }
        var stops: [String] { all.filter { $0.hasPrefix("stop ") }.map { String($0.dropFirst(5)) } }
        var starts: Int { all.filter { $0.hasPrefix("start ") }.count }
    }

    /// Runs until its graceful shutdown, then takes `stopping` to stop (a drain, say).
    struct StandIn: Service {
        let name: String
        let journal: Journal
        var stopping: Duration = .zero
        /// Ends on its own after this long (a service whose work ended).
        var endsAfter: Duration?

        func run() async throws {
            journal.add("start \(name)")
            if let endsAfter {
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: endsAfter) }
            } else {
                try? await gracefulShutdown()
            }
            try? await Task.sleep(for: stopping)
            journal.add("stop \(name)")
        }
    }

    static let logger: Logger = {
        var l = Logger(label: "lineup-test")
        l.logLevel = .critical
        return l
    }()

    func lineup(_ journal: Journal, full: Bool = true, consumer: StandIn? = nil, relayEndsAfter: Duration? = nil) -> ServiceLineup {
        ServiceLineup(
            expiry: StandIn(name: "expiry", journal: journal),
            retentionWarning: StandIn(name: "retention", journal: journal),
            registry: StandIn(name: "registry", journal: journal),
            relay: StandIn(name: "relay", journal: journal, endsAfter: relayEndsAfter),
            metrics: full ? StandIn(name: "metrics", journal: journal) : nil,
            // The consumer's stop takes a while (the drain): the services after it wait for it.
            consumer: consumer ?? StandIn(name: "consumer", journal: journal, stopping: .milliseconds(200)),
            recovery: full ? StandIn(name: "recovery", journal: journal) : nil,
            heartbeat: full ? StandIn(name: "heartbeat", journal: journal) : nil)
    }

    func waitForStarts(_ journal: Journal, _ n: Int) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while journal.starts < n {
            try #require(ContinuousClock.now < deadline, "only \(journal.starts) of \(n) services started")
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    @Test func aGracefulShutdownStopsHealthFirstThenRecoveryThenTheConsumerAndOnlyThenTheRest() async throws {
        let journal = Journal()
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(services: lineup(journal).configurations, logger: Self.logger))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            try await waitForStarts(journal, 8)
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        #expect(journal.stops == ["heartbeat", "recovery", "consumer", "metrics", "relay", "registry", "retention", "expiry"])
    }

    @Test func withoutTheOptionalServicesTheConsumerStopsFirst() async throws {
        let journal = Journal()
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(services: lineup(journal, full: false).configurations, logger: Self.logger))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            try await waitForStarts(journal, 5)
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        #expect(journal.stops == ["consumer", "relay", "registry", "retention", "expiry"])
    }

    @Test func theConsumerEndingOnItsOwnStopsTheOthersInOrder() async throws {
        let journal = Journal()
        let consumer = StandIn(name: "consumer", journal: journal, endsAfter: .milliseconds(100))
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(services: lineup(journal, consumer: consumer).configurations, logger: Self.logger))
        try await group.run()
        #expect(journal.stops == ["consumer", "heartbeat", "recovery", "metrics", "relay", "registry", "retention", "expiry"])
    }

    @Test func aHelperThatEndsEarlyLeavesTheOthersRunning() async throws {
        let journal = Journal()
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: lineup(journal, relayEndsAfter: .milliseconds(1)).configurations, logger: Self.logger))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            try await waitForStarts(journal, 8)
            let deadline = ContinuousClock.now + .seconds(10)
            while !journal.stops.contains("relay") {
                try #require(ContinuousClock.now < deadline)
                try await Task.sleep(for: .milliseconds(5))
            }
            try await Task.sleep(for: .milliseconds(50))
            #expect(journal.stops == ["relay"], "nothing else stopped")
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        #expect(journal.stops == ["relay", "heartbeat", "recovery", "consumer", "metrics", "registry", "retention", "expiry"])
    }

    @Test func theDrainAndCloseRunOnceWhoeverAsksAndEveryoneWaitsForIt() async throws {
        let journal = Journal()
        let once = OnceTask {
            try? await Task.sleep(for: .milliseconds(50))
            journal.add("drained and closed")
        }
        once.start()
        once.start()
        async let a: Void = once.run()
        async let b: Void = once.run()
        _ = await (a, b)
        #expect(journal.all == ["drained and closed"], "done once, and done when run() returns")
        await once.run()
        #expect(journal.all == ["drained and closed"])
    }
}

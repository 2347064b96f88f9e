import Kafka
import Logging
import ServiceLifecycle
import Synchronization

/// Notices unclean exits in the consumer group, for the crash-loop breaker: every run (process)
/// registers itself in PostgreSQL, and every ~2 s each run removes the group's runs whose
/// sessions are gone (see `RunStore.check`). When any instance of the group found one within
/// `window`, partitions assigned now start on probation (`Dispatcher.CrashGuard`).
public final class RunRegistry: Service, Sendable {
    public let groupId: String
    public let runId: String
    private let store: RunStore
    private let window: Duration
    private let interval: Duration
    /// A run without a heartbeat for this long counts as dead even if its name still has a
    /// session (an application_name shared through a URL parameter, a hung process).
    private let staleAfterSeconds: Int
    private let logger: Logger
    /// When the group's last unclean exit was seen, on this process's clock; nil: not recently.
    private let lastUncleanExit = Mutex<ContinuousClock.Instant?>(nil)

    public init(
        store: RunStore, groupId: String, runId: String, window: Duration, interval: Duration = .seconds(2),
        staleAfterSeconds: Int = 60, logger: Logger
    ) {
        self.store = store
        self.groupId = groupId
        self.runId = runId
        self.window = window
        self.interval = interval
        self.staleAfterSeconds = staleAfterSeconds
        self.logger = logger
    }

    /// Registers this run and checks once; call before the group consumer subscribes, so the
    /// first assignment already knows about a crash of the previous run.
    public func start() async throws {
        try? await store.removeLeftovers()
        try await check()
    }

    /// As a service: heartbeat and check every `interval` until the graceful shutdown (or
    /// cancellation); failures (an outage) are retried. `deregister` is the clean stop's last step.
    public func run() async {
        await cancelWhenGracefulShutdown { await self.checkPeriodically() }
    }

    private func checkPeriodically() async {
        while !Task.isCancelled {
            do { try await Task.sleep(for: interval) } catch { return }
            do { try await check() } catch {
                logger.debug("run registry check failed: \(error)")
            }
        }
    }

    public func check() async throws {
        let result = try await store.check(groupId: groupId, runId: runId, staleAfterSeconds: staleAfterSeconds)
        if !result.deadRuns.isEmpty {
            logger.warning(
                "instances of the group stopped without a clean shutdown; partitions assigned in the next \(window) start on probation",
                metadata: ["runs": "\(result.deadRuns)"])
        }
        let seen = result.secondsSinceUncleanExit.flatMap { age -> ContinuousClock.Instant? in
            guard age.isFinite, age >= 0, age < Double(window.components.seconds) + 1 else { return nil }
            return ContinuousClock.now - .milliseconds(Int64(age * 1_000))
        }
        lastUncleanExit.withLock { $0 = seen }
    }

    /// Whether an unclean exit in the group was seen within the window (cheap; any thread).
    public var recentUncleanExit: Bool {
        lastUncleanExit.withLock { $0.map { ContinuousClock.now - $0 < window } ?? false }
    }

    /// A clean stop: others must not take it for a crash.
    public func deregister() async {
        do { try await store.deregister(groupId: groupId, runId: runId) } catch {
            logger.warning("could not deregister this run: \(error)")
        }
    }

    /// The dispatcher's view: the recent-exit test and this run's in-progress markers.
    public var crashGuard: Dispatcher.CrashGuard {
        Dispatcher.CrashGuard(
            recentUncleanExit: { self.recentUncleanExit },
            markInProgress: { tp, offset in
                try await self.store.markInProgress(groupId: self.groupId, tp, offset: offset, runId: self.runId)
            },
            clearInProgress: { tp, offset in
                try await self.store.clearInProgress(groupId: self.groupId, tp, offset: offset)
            })
    }
}

import Kafka
import Logging
import ServiceLifecycle
import Synchronization

/// Sends what transactions left in the outbox (deduction requests, notifications), then deletes
/// it. Rows are locked while sent, so several instances never send the same row at once, and a
/// crash between send and delete only means the row is sent again (consumers dedupe by
/// order_id and status). Woken right after a commit, and sweeps every `interval` for leftovers
/// of a crashed instance.
public final class OutboxRelay: Service, Sendable {
    private let store: OrderStore
    private let producer: any RecordSender
    private let interval: Duration
    private let logger: Logger
    private let wake: AsyncStream<Void>.Continuation
    private let wakes: AsyncStream<Void>

    public init(store: OrderStore, producer: any RecordSender, interval: Duration = .seconds(1), logger: Logger) {
        self.store = store
        self.producer = producer
        self.interval = interval
        self.logger = logger
        (wakes, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    public func notify() { wake.yield() }

    public func run() async throws {
        let ticker = Task { [wake, interval] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                wake.yield()
            }
        }
        defer { ticker.cancel() }
        await withGracefulShutdownHandler {
            for await _ in wakes {
                await relayAll()
            }
        } onGracefulShutdown: { [wake] in
            wake.finish()
        }
        await relayAll()  // what the last transactions left
    }

    /// Sends batches until the outbox is empty or an error stops this round.
    public func relayAll() async {
        do {
            while try await relayBatch() > 0 {}
        } catch {
            logger.warning("outbox relay: \(error); will retry")
        }
    }

    func relayBatch(limit: Int = 200) async throws -> Int {
        // The rows stay locked while they are sent: the transaction is held open across the send.
        // COMMIT rides with the statement before it: two hand-offs to the libpq queue with rows
        // (lock; delete + COMMIT, one round trip), one without (lock + COMMIT).
        try await store.transaction { tx in
            let entries = try await tx.lockOutbox(limit: limit, commitIfNone: true)
            guard !entries.isEmpty else { return 0 }
            _ = try await producer.sendAll(entries.map(\.record))
            try await tx.deleteOutbox(ids: entries.map(\.id), thenCommit: true)
            return entries.count
        }
    }
}

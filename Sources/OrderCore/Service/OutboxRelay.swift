import Kafka
import Logging
import ServiceLifecycle
import Synchronization

/// Sends what transactions left in the outbox (deduction requests, notifications), then deletes
/// it. Rows are locked while sent, so several instances never send the same row at once, and a
/// crash between send and delete only means the row is sent again (consumers dedupe by
/// order_id and status). Woken right after a commit, and sweeps every `interval` for leftovers
/// of a crashed instance.
///
/// Each row is judged on its own: delivered rows are deleted even when others failed; a row the
/// broker refused for good (too large for the topic, a topic that is gone for good, no permission)
/// goes to the dead-letter topic (`dlq-source-topic`: where it was going, for `replay-dlq`) and is
/// deleted, so it cannot hold up the rows behind it for ever; a row that failed for a passing
/// reason (an outage, a timeout) stays, and this round ends. A dead-lettered status change lets
/// the order's next one go: a later `replay-dlq` delivers it after that one (documented in
/// docs/reliability.md; the alternative, holding the order's events for ever, loses more).
public final class OutboxRelay: Service, Sendable {
    /// What to do with a record the broker refused.
    public struct Refusals: Sendable {
        /// True: the cause may pass; keep the row and try again later.
        public var isRetriable: @Sendable (KafkaError, KafkaOutgoingRecord) -> Bool
        /// The dead-letter copy of a row refused for good (nil: such a row stays, logged each round).
        public var deadLetter: (@Sendable (KafkaOutgoingRecord, String) -> KafkaOutgoingRecord)?

        public init(
            isRetriable: @escaping @Sendable (KafkaError, KafkaOutgoingRecord) -> Bool = { error, _ in error.isRetriable },
            deadLetter: (@Sendable (KafkaOutgoingRecord, String) -> KafkaOutgoingRecord)? = nil
        ) {
            self.isRetriable = isRetriable
            self.deadLetter = deadLetter
        }
    }

    private let store: OrderStore
    private let producer: any RecordSender
    private let interval: Duration
    private let refusals: Refusals
    private let logger: Logger
    private let wake: AsyncStream<Void>.Continuation
    private let wakes: AsyncStream<Void>

    public init(store: OrderStore, producer: any RecordSender, interval: Duration = .seconds(1), refusals: Refusals = Refusals(), logger: Logger) {
        self.store = store
        self.producer = producer
        self.interval = interval
        self.refusals = refusals
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

    /// A send that failed for a passing reason: the row stays, this round ends.
    struct Stalled: Error, CustomStringConvertible {
        let error: KafkaError
        let finished: Int
        var description: String { "\(error.message) (\(finished) rows finished first)" }
    }

    /// One batch: returns how many rows it finished (sent, or dead-lettered); throws `Stalled`
    /// after committing what it finished when a row must wait.
    func relayBatch(limit: Int = 200) async throws -> Int {
        // The rows stay locked while they are sent: the transaction is held open across the send.
        // COMMIT rides with the statement before it: two hand-offs to the libpq queue with rows
        // (lock; delete + COMMIT, one round trip), one without (lock + COMMIT).
        let (finished, stall) = try await store.transaction { tx -> (Int, KafkaError?) in
            let entries = try await tx.lockOutbox(limit: limit, commitIfNone: true)
            guard !entries.isEmpty else { return (0, nil) }
            let results = await producer.sendEach(entries.map(\.record))
            var done: [Int64] = []
            var stall: KafkaError?
            var refused: [(entry: OrderStore.OutboxEntry, error: KafkaError)] = []
            for (entry, result) in zip(entries, results) {
                switch result {
                case .success: done.append(entry.id)
                case .failure(let error) where refusals.isRetriable(error, entry.record): stall = stall ?? error
                case .failure(let error): refused.append((entry, error))
                }
            }
            done += await park(refused, stall: &stall)
            try await tx.deleteOutbox(ids: done, thenCommit: true)
            return (done.count, stall)
        }
        if let stall { throw Stalled(error: stall, finished: finished) }
        return finished
    }

    /// Rows refused for good: their dead-letter copies are sent; the ids that may be deleted are
    /// returned. A copy that fails keeps its row (nothing is lost): for a passing reason it goes
    /// next round; refused for good too, the row stays, logged each round, until an operator acts.
    private func park(_ refused: [(entry: OrderStore.OutboxEntry, error: KafkaError)], stall: inout KafkaError?) async -> [Int64] {
        guard !refused.isEmpty else { return [] }
        guard let deadLetter = refusals.deadLetter else {
            for (entry, error) in refused {
                logger.error("outbox record refused for good, no dead-letter topic: kept in the outbox", metadata: metadata(entry, error))
                stall = stall ?? error
            }
            return []
        }
        let copies = refused.map { deadLetter($0.entry.record, "refused for good: \($0.error.message)") }
        var ids: [Int64] = []
        for ((entry, error), (copy, result)) in zip(refused, zip(copies, await producer.sendEach(copies))) {
            switch result {
            case .success:
                logger.error("outbox record refused for good: sent to the dead-letter topic", metadata: metadata(entry, error))
                ids.append(entry.id)
            case .failure(let dlqError) where refusals.isRetriable(dlqError, copy):
                stall = stall ?? dlqError
            case .failure(let dlqError):
                var m = metadata(entry, error)
                m["dead_letter_error"] = "\(dlqError.message)"
                logger.error("outbox record refused for good, and its dead-letter copy too: kept in the outbox", metadata: m)
                stall = stall ?? dlqError
            }
        }
        return ids
    }

    private func metadata(_ entry: OrderStore.OutboxEntry, _ error: KafkaError) -> Logger.Metadata {
        [
            "outbox_id": "\(entry.id)", "topic": "\(entry.record.topic)", "bytes": "\(entry.record.payloadBytes)",
            "error": "\(error.message)", "error_code": "\(error.code)",
        ]
    }
}

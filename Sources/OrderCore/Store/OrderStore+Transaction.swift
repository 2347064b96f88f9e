import Postgres

extension OrderStore {
    /// One open transaction of the store whose body may suspend between statements (the outbox
    /// relay sends to Kafka in it). Each statement is one hand-off to the connection's queue and
    /// runs the `SyncTransaction` statement of the same name. Only `OrderStore.transaction` makes
    /// one, so every transaction is opened (and ended) here.
    public struct Transaction: Sendable {
        let store: OrderStore
        let conn: PostgresConnection

        /// `body` in one hop to the connection's queue, in this transaction.
        private func onQueue<T: Sendable>(_ body: @escaping @Sendable (SyncTransaction) throws -> T) async throws -> T {
            let store = self.store
            return try await conn.onQueue { conn in try body(SyncTransaction(store: store, conn: conn)) }
        }

        /// Inserts an order and all its lines with new ids (see `SyncTransaction.insertOrder`).
        func insertOrder(userId: Int64, lines: [(product: Product, quantity: Int)], total: Money) async throws -> Order {
            try await onQueue { tx in try tx.insertOrder(userId: userId, ids: try tx.newOrderIds(lines: lines.count), lines: lines, total: total) }
        }

        /// Moves a pending order to its final status; nil when it is not pending (repeat or late result).
        func finishOrder(orderId: Int64, status: OrderStatus) async throws -> OrderStore.FinishedOrder? {
            try await onQueue { try $0.finishOrder(orderId: orderId, status: status) }
        }

        /// Queues records in the outbox, in order, with one statement.
        func enqueue(_ queued: [OrderStore.OutboxRecord]) async throws {
            guard !queued.isEmpty else { return }
            try await onQueue { try $0.enqueue(queued) }
        }

        /// Oldest unsent outbox records, locked so that another instance skips them (see
        /// `SyncTransaction.lockOutbox`). `commitIfNone`: when there are none, the transaction ends
        /// at once, in the same hand-off (it locked nothing; nothing is left to do in it).
        func lockOutbox(limit: Int, commitIfNone: Bool = false) async throws -> [OrderStore.OutboxEntry] {
            try await onQueue { tx in
                let entries = try tx.lockOutbox(limit: limit)
                if entries.isEmpty && commitIfNone { try tx.commit() }
                return entries
            }
        }

        /// `thenCommit`: the transaction's last statement; its COMMIT goes in the same hand-off and
        /// the same network round trip.
        func deleteOutbox(ids: [Int64], thenCommit: Bool = false) async throws {
            try await onQueue { try $0.deleteOutbox(ids: ids, thenCommit: thenCommit) }
        }
    }
}

import OrderCore
import Postgres

/// CONTRACT section 5, `inventory_check` and `inventory_deduction`.
public struct InventoryServiceLogic: Sendable {
    let db: PostgresClient
    public init(db: PostgresClient) { self.db = db }

    static func lines(_ request: JSON) -> [(productId: Int64, quantity: Int)] {
        guard case .array(let items)? = request["items"] else { return [] }
        return items.compactMap { item in
            guard let p = item["product_id"]?.int64, let q = item["quantity"]?.int64 else { return nil }
            return (p, Int(clamping: q))
        }
    }

    public func check(_ request: JSON) async throws -> JSON {
        let lines = Self.lines(request)
        let stock = try await available(lines.map(\.productId))
        return .object([
            ("request_id", request["request_id"] ?? .null),
            ("items", .array(lines.map { StockLine(productId: $0.productId, requested: $0.quantity, available: stock[$0.productId] ?? 0).json })),
        ])
    }

    /// Deducts all lines or none. Each line is a conditional row update, so two orders racing
    /// for the last unit get one `deducted` and one `insufficient`. A repeated request for the
    /// same order gets the first answer again and deducts nothing.
    public func deduct(_ request: JSON) async throws -> JSON? {
        guard let orderId = request["order_id"]?.int64 else { return nil }
        let requestId = request["request_id"] ?? .null
        if let stored = try await db.query("SELECT reply FROM ref_deductions WHERE order_id = $1", [orderId]).rows.first {
            return try JSON.parse(try stored.decode(0, as: [UInt8].self))
        }
        // One line per product, locked in product order: concurrent deductions never deadlock.
        var merged: [Int64: Int] = [:]
        for l in Self.lines(request) { merged[l.productId, default: 0] += l.quantity }
        let lines = merged.sorted { $0.key < $1.key }.map { (productId: $0.key, quantity: $0.value) }
        struct Short: Error {}
        do {
            // One hand-off to the connection's queue for the whole transaction.
            return try await db.transactionOnQueue { conn in
                let ids = PostgresArrayLiteral(lines.map(\.productId))
                _ = try conn.query(
                    "SELECT product_id FROM ref_stock WHERE product_id = ANY($1::bigint[]) ORDER BY product_id FOR UPDATE", [ids])
                // Rows are locked now: one conditional update for all lines.
                let r = try conn.query(
                    """
                    UPDATE ref_stock s SET available = s.available - v.quantity
                    FROM unnest($1::bigint[], $2::integer[]) AS v(product_id, quantity)
                    WHERE s.product_id = v.product_id AND s.available >= v.quantity
                    """,
                    [ids, PostgresArrayLiteral(lines.map(\.quantity))])
                if r.affectedRows != lines.count { throw Short() }
                let reply = JSON.object([("request_id", requestId), ("order_id", .int(orderId)), ("status", "deducted")])
                // The last statement: COMMIT rides with it (one round trip fewer).
                _ = try conn.queryThenCommit("INSERT INTO ref_deductions (order_id, reply) VALUES ($1, $2)", [orderId, reply.bytes])
                return reply
            }
        } catch is Short {
            let stock = try await available(lines.map(\.productId))
            let short = lines.filter { (stock[$0.productId] ?? 0) < $0.quantity }
            let reply = JSON.object([
                ("request_id", requestId), ("order_id", .int(orderId)), ("status", "insufficient"),
                ("items", .array(short.map { StockLine(productId: $0.productId, requested: $0.quantity, available: stock[$0.productId] ?? 0).json })),
            ])
            _ = try await db.query("INSERT INTO ref_deductions (order_id, reply) VALUES ($1, $2) ON CONFLICT DO NOTHING", [orderId, reply.bytes])
            return reply
        }
    }

    func available(_ ids: [Int64]) async throws -> [Int64: Int] {
        guard !ids.isEmpty else { return [:] }
        let list = "{" + ids.map(String.init).joined(separator: ",") + "}"
        var out: [Int64: Int] = [:]
        for row in try await db.query("SELECT product_id, available FROM ref_stock WHERE product_id = ANY($1::bigint[])", [list]).rows {
            out[try row.decode(0)] = try row.decode(1)
        }
        return out
    }
}

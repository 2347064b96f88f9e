import OrderCore
import Postgres

/// CONTRACT section 5, `get_product_details` → `product_details`.
public struct ProductServiceLogic: Sendable {
    let db: PostgresClient
    public init(db: PostgresClient) { self.db = db }

    public func details(_ request: JSON) async throws -> JSON {
        var ids: [Int64] = []
        if case .array(let list)? = request["product_ids"] { ids = list.compactMap(\.int64) }
        let unique = Array(Set(ids)).sorted()
        var found: [Int64: JSON] = [:]
        if !unique.isEmpty {
            let list = "{" + unique.map(String.init).joined(separator: ",") + "}"
            let rows = try await db.query(
                "SELECT product_id, name, price::text FROM ref_products WHERE product_id = ANY($1::bigint[])", [list]
            ).rows
            for row in rows {
                let id: Int64 = try row.decode(0)
                found[id] = .object([("product_id", .int(id)), ("name", .string(try row.decode(1))), ("price", .string(try row.decode(2)))])
            }
        }
        return .object([
            ("request_id", request["request_id"] ?? .null),
            ("products", .array(unique.compactMap { found[$0] })),
            ("not_found", .array(unique.filter { found[$0] == nil }.map { .int($0) })),
        ])
    }
}

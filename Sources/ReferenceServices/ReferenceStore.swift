import Logging
import OrderCore
import Postgres

/// Tables of the reference Product and Inventory services (not the order service's: those teams
/// own their data). Migrations are tracked in their own table.
public enum ReferenceSchema {
    public static let migrationsTable = "reference_services_migrations"
    public static let migrations: [Migration] = [
        Migration(
            version: 1, name: "products, stock, deductions",
            sql: """
                CREATE TABLE ref_products (
                    product_id BIGINT PRIMARY KEY,
                    name       TEXT NOT NULL,
                    price      NUMERIC(14, 2) NOT NULL CHECK (price >= 0)
                );
                CREATE TABLE ref_stock (
                    product_id BIGINT PRIMARY KEY,
                    available  INTEGER NOT NULL CHECK (available >= 0)
                );
                CREATE TABLE ref_deductions (
                    order_id BIGINT PRIMARY KEY,
                    reply    BYTEA NOT NULL
                );
                """)
    ]

    public static func migrate(_ db: PostgresClient, logger: Logger) async throws {
        _ = try await MigrationRunner(client: db, logger: logger, table: migrationsTable).migrate(migrations)
    }

    /// Loads a catalog file: `{"products": [{"product_id": 1, "name": "Mug", "price": "9.99", "stock": 100}]}`.
    /// Names and prices are refreshed on every start; stock is set only for products new to the table,
    /// so a restart does not undo deductions.
    public static func seed(_ db: PostgresClient, catalogJSON: [UInt8]) async throws -> Int {
        guard case .array(let products)? = try JSON.parse(catalogJSON)["products"] else {
            throw ConfigurationError("catalog needs a 'products' array")
        }
        var n = 0
        for p in products {
            guard let id = p["product_id"]?.int64, case .string(let name)? = p["name"], case .string(let price)? = p["price"],
                Money(price) != nil
            else { throw ConfigurationError("catalog entry needs product_id, name and price: \(p.text)") }
            let stock = p["stock"]?.int64 ?? 0
            _ = try await db.query(
                "INSERT INTO ref_products (product_id, name, price) VALUES ($1, $2, $3::numeric) ON CONFLICT (product_id) DO UPDATE SET name = EXCLUDED.name, price = EXCLUDED.price",
                [id, name, price])
            _ = try await db.query(
                "INSERT INTO ref_stock (product_id, available) VALUES ($1, $2) ON CONFLICT DO NOTHING", [id, Int(stock)])
            n += 1
        }
        return n
    }
}

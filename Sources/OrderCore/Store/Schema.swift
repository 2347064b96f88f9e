import Postgres

/// The order service's schema, as ordered, versioned migrations. Never edit a released
/// migration: add a new one.
public enum OrderSchema {
    public static let migrationsTable = "order_service_migrations"

    public static let migrations: [Migration] = [
        Migration(
            version: 1, name: "carts, cart items, orders, order items",
            sql: """
                CREATE TABLE carts (
                    cart_id     BIGSERIAL PRIMARY KEY,
                    user_id     BIGINT NOT NULL UNIQUE CHECK (user_id > 0),
                    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
                );
                CREATE TABLE cart_items (
                    cart_item_id BIGSERIAL PRIMARY KEY,
                    cart_id      BIGINT NOT NULL REFERENCES carts (cart_id) ON DELETE CASCADE,
                    product_id   BIGINT NOT NULL CHECK (product_id > 0),
                    product_name TEXT NOT NULL,
                    unit_price   NUMERIC(14, 2) NOT NULL CHECK (unit_price >= 0),
                    quantity     INTEGER NOT NULL CHECK (quantity BETWEEN 1 AND 10000),
                    UNIQUE (cart_id, product_id)
                );
                CREATE TABLE orders (
                    order_id    BIGSERIAL PRIMARY KEY,
                    user_id     BIGINT NOT NULL CHECK (user_id > 0),
                    status      TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'rejected')),
                    total_price NUMERIC(20, 2) NOT NULL CHECK (total_price >= 0),
                    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
                );
                CREATE INDEX orders_by_user ON orders (user_id, order_id DESC);
                CREATE TABLE order_items (
                    order_item_id BIGSERIAL PRIMARY KEY,
                    order_id      BIGINT NOT NULL REFERENCES orders (order_id) ON DELETE CASCADE,
                    product_id    BIGINT NOT NULL,
                    product_name  TEXT NOT NULL,
                    unit_price    NUMERIC(14, 2) NOT NULL CHECK (unit_price >= 0),
                    quantity      INTEGER NOT NULL CHECK (quantity BETWEEN 1 AND 10000)
                );
                CREATE INDEX order_items_by_order ON order_items (order_id);
                """),
        Migration(
            version: 2, name: "idempotency: stored replies by idempotency key",
            sql: """
                CREATE TABLE processed_requests (
                    idempotency_key TEXT PRIMARY KEY,
                    reply           BYTEA NOT NULL,
                    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
                );
                CREATE INDEX processed_requests_by_age ON processed_requests (created_at);
                """),
        Migration(
            version: 3, name: "outbox: records to send after the transaction that wrote them",
            sql: """
                CREATE TABLE outbox (
                    id         BIGSERIAL PRIMARY KEY,
                    topic      TEXT NOT NULL,
                    key        BYTEA,
                    value      BYTEA NOT NULL,
                    headers    BYTEA NOT NULL,
                    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
                );
                """),
    ]
}

/// RFC 3339 UTC with milliseconds, formatted by the database so no clock or locale of ours is involved.
let sqlTimestamp = #"to_char(%@ AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"#

func timestampSQL(_ column: String) -> String { sqlTimestamp.replacingOccurrences(of: "%@", with: column) }

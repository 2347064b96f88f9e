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
        Migration(
            version: 4, name: "cart mutations as functions: one round trip per change",
            sql: """
                -- Both return the cart after the change (one row per line, ordered by
                -- cart_item_id; one row with null line columns for an empty cart), or one row
                -- whose outcome says why nothing changed.
                CREATE FUNCTION order_service_add_item(
                    p_user BIGINT, p_product BIGINT, p_name TEXT, p_price NUMERIC, p_quantity INTEGER,
                    p_max_quantity INTEGER, p_max_lines INTEGER)
                RETURNS TABLE (outcome TEXT, current_quantity INTEGER, r_cart_id BIGINT, r_created_at TEXT,
                               r_cart_item_id BIGINT, r_product_id BIGINT, r_product_name TEXT, r_unit_price TEXT, r_quantity INTEGER)
                LANGUAGE plpgsql AS $fn$
                DECLARE v_cart BIGINT; v_quantity INTEGER; v_lines INTEGER;
                BEGIN
                    INSERT INTO carts AS c (user_id) VALUES (p_user)
                        ON CONFLICT (user_id) DO UPDATE SET user_id = EXCLUDED.user_id RETURNING c.cart_id INTO v_cart;
                    SELECT i.quantity INTO v_quantity FROM cart_items i WHERE i.cart_id = v_cart AND i.product_id = p_product FOR UPDATE;
                    IF FOUND THEN
                        IF v_quantity + p_quantity > p_max_quantity THEN
                            RETURN QUERY SELECT 'too_many'::TEXT, v_quantity, NULL::BIGINT, NULL::TEXT, NULL::BIGINT, NULL::BIGINT, NULL::TEXT, NULL::TEXT, NULL::INTEGER;
                            RETURN;
                        END IF;
                        UPDATE cart_items i SET quantity = v_quantity + p_quantity, product_name = p_name, unit_price = p_price
                            WHERE i.cart_id = v_cart AND i.product_id = p_product;
                    ELSE
                        SELECT count(*) INTO v_lines FROM cart_items i WHERE i.cart_id = v_cart;
                        IF v_lines >= p_max_lines THEN
                            RETURN QUERY SELECT 'cart_full'::TEXT, 0, NULL::BIGINT, NULL::TEXT, NULL::BIGINT, NULL::BIGINT, NULL::TEXT, NULL::TEXT, NULL::INTEGER;
                            RETURN;
                        END IF;
                        INSERT INTO cart_items (cart_id, product_id, product_name, unit_price, quantity)
                            VALUES (v_cart, p_product, p_name, p_price, p_quantity);
                    END IF;
                    RETURN QUERY SELECT 'ok'::TEXT, 0, c.cart_id, to_char(c.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                            i.cart_item_id, i.product_id, i.product_name, i.unit_price::TEXT, i.quantity
                        FROM carts c LEFT JOIN cart_items i ON i.cart_id = c.cart_id WHERE c.cart_id = v_cart ORDER BY i.cart_item_id;
                END $fn$;

                -- Sets a line's quantity (0 removes the line); outcome 'not_found' when the cart
                -- has no such line.
                CREATE FUNCTION order_service_set_item(p_user BIGINT, p_product BIGINT, p_quantity INTEGER)
                RETURNS TABLE (outcome TEXT, current_quantity INTEGER, r_cart_id BIGINT, r_created_at TEXT,
                               r_cart_item_id BIGINT, r_product_id BIGINT, r_product_name TEXT, r_unit_price TEXT, r_quantity INTEGER)
                LANGUAGE plpgsql AS $fn$
                DECLARE v_cart BIGINT; v_rows INTEGER;
                BEGIN
                    SELECT c.cart_id INTO v_cart FROM carts c WHERE c.user_id = p_user FOR UPDATE;
                    IF NOT FOUND THEN
                        RETURN QUERY SELECT 'not_found'::TEXT, 0, NULL::BIGINT, NULL::TEXT, NULL::BIGINT, NULL::BIGINT, NULL::TEXT, NULL::TEXT, NULL::INTEGER;
                        RETURN;
                    END IF;
                    IF p_quantity = 0 THEN
                        DELETE FROM cart_items i WHERE i.cart_id = v_cart AND i.product_id = p_product;
                    ELSE
                        UPDATE cart_items i SET quantity = p_quantity WHERE i.cart_id = v_cart AND i.product_id = p_product;
                    END IF;
                    GET DIAGNOSTICS v_rows = ROW_COUNT;
                    IF v_rows = 0 THEN
                        RETURN QUERY SELECT 'not_found'::TEXT, 0, NULL::BIGINT, NULL::TEXT, NULL::BIGINT, NULL::BIGINT, NULL::TEXT, NULL::TEXT, NULL::INTEGER;
                        RETURN;
                    END IF;
                    RETURN QUERY SELECT 'ok'::TEXT, 0, c.cart_id, to_char(c.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                            i.cart_item_id, i.product_id, i.product_name, i.unit_price::TEXT, i.quantity
                        FROM carts c LEFT JOIN cart_items i ON i.cart_id = c.cart_id WHERE c.cart_id = v_cart ORDER BY i.cart_item_id;
                END $fn$;
                """),
        Migration(
            version: 5, name: "cart requests of many users in one statement (group commit)",
            sql: """
                -- Claims each request's idempotency key (a placeholder reply, replaced in the same
                -- transaction), then applies its operation: 'add' (add_item), 'set' (update_item;
                -- quantity 0 removes), 'get' (get_cart). Rows are those of the cart functions
                -- above, prefixed by the request's index (1-based); a key stored before gives one
                -- row with outcome 'duplicate'. The caller orders requests by user, so concurrent
                -- batches lock carts in the same order.
                CREATE FUNCTION order_service_cart_batch(
                    p_keys TEXT[], p_ops TEXT[], p_users BIGINT[], p_products BIGINT[], p_names TEXT[],
                    p_prices NUMERIC[], p_quantities INTEGER[], p_max_quantity INTEGER, p_max_lines INTEGER)
                RETURNS TABLE (r_index INTEGER, outcome TEXT, current_quantity INTEGER, r_cart_id BIGINT, r_created_at TEXT,
                               r_cart_item_id BIGINT, r_product_id BIGINT, r_product_name TEXT, r_unit_price TEXT, r_quantity INTEGER)
                LANGUAGE plpgsql AS $fn$
                DECLARE i INTEGER;
                BEGIN
                    FOR i IN 1 .. coalesce(array_length(p_keys, 1), 0) LOOP
                        INSERT INTO processed_requests (idempotency_key, reply) VALUES (p_keys[i], '')
                            ON CONFLICT DO NOTHING;
                        IF NOT FOUND THEN
                            RETURN QUERY SELECT i, 'duplicate'::TEXT, 0, NULL::BIGINT, NULL::TEXT, NULL::BIGINT, NULL::BIGINT, NULL::TEXT, NULL::TEXT, NULL::INTEGER;
                            CONTINUE;
                        END IF;
                        IF p_ops[i] = 'add' THEN
                            RETURN QUERY SELECT i, a.* FROM order_service_add_item(
                                p_users[i], p_products[i], p_names[i], p_prices[i], p_quantities[i], p_max_quantity, p_max_lines) a;
                        ELSIF p_ops[i] = 'set' THEN
                            RETURN QUERY SELECT i, s.* FROM order_service_set_item(p_users[i], p_products[i], p_quantities[i]) s;
                        ELSIF p_ops[i] = 'get' THEN
                            RETURN QUERY SELECT i, 'ok'::TEXT, 0, c.cart_id, to_char(c.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                                    ci.cart_item_id, ci.product_id, ci.product_name, ci.unit_price::TEXT, ci.quantity
                                FROM carts c LEFT JOIN cart_items ci ON ci.cart_id = c.cart_id WHERE c.user_id = p_users[i]
                                ORDER BY ci.cart_item_id;
                            IF NOT FOUND THEN
                                RETURN QUERY SELECT i, 'ok'::TEXT, 0, NULL::BIGINT, NULL::TEXT, NULL::BIGINT, NULL::BIGINT, NULL::TEXT, NULL::TEXT, NULL::INTEGER;
                            END IF;
                        ELSE
                            RAISE EXCEPTION 'unknown cart batch operation %', p_ops[i];
                        END IF;
                    END LOOP;
                END $fn$;
                """),
        Migration(
            version: 6, name: "cart totals bounded by the largest amount (999999999999.99)",
            sql: """
                -- Same signatures and rows as version 4, plus outcome 'over_total': the change would
                -- take a line or the cart total above 999999999999.99 (Money.max), so nothing changed.
                -- Removing a line, or lowering a quantity, is never refused.
                CREATE OR REPLACE FUNCTION order_service_add_item(
                    p_user BIGINT, p_product BIGINT, p_name TEXT, p_price NUMERIC, p_quantity INTEGER,
                    p_max_quantity INTEGER, p_max_lines INTEGER)
                RETURNS TABLE (outcome TEXT, current_quantity INTEGER, r_cart_id BIGINT, r_created_at TEXT,
                               r_cart_item_id BIGINT, r_product_id BIGINT, r_product_name TEXT, r_unit_price TEXT, r_quantity INTEGER)
                LANGUAGE plpgsql AS $fn$
                DECLARE v_cart BIGINT; v_quantity INTEGER; v_lines INTEGER; v_found BOOLEAN; v_others NUMERIC;
                BEGIN
                    -- Refused before a cart is created, so that a refusal changes nothing.
                    IF p_price * p_quantity > 999999999999.99 THEN
                        RETURN QUERY SELECT 'over_total'::TEXT, 0, \(null9);
                        RETURN;
                    END IF;
                    INSERT INTO carts AS c (user_id) VALUES (p_user)
                        ON CONFLICT (user_id) DO UPDATE SET user_id = EXCLUDED.user_id RETURNING c.cart_id INTO v_cart;
                    SELECT i.quantity INTO v_quantity FROM cart_items i WHERE i.cart_id = v_cart AND i.product_id = p_product FOR UPDATE;
                    v_found := FOUND;
                    SELECT coalesce(sum(i.unit_price * i.quantity), 0) INTO v_others
                        FROM cart_items i WHERE i.cart_id = v_cart AND i.product_id <> p_product;
                    IF v_found THEN
                        IF v_quantity + p_quantity > p_max_quantity THEN
                            RETURN QUERY SELECT 'too_many'::TEXT, v_quantity, \(null9);
                            RETURN;
                        END IF;
                        IF v_others + p_price * (v_quantity + p_quantity) > 999999999999.99 THEN
                            RETURN QUERY SELECT 'over_total'::TEXT, v_quantity, \(null9);
                            RETURN;
                        END IF;
                        UPDATE cart_items i SET quantity = v_quantity + p_quantity, product_name = p_name, unit_price = p_price
                            WHERE i.cart_id = v_cart AND i.product_id = p_product;
                    ELSE
                        SELECT count(*) INTO v_lines FROM cart_items i WHERE i.cart_id = v_cart;
                        IF v_lines >= p_max_lines THEN
                            RETURN QUERY SELECT 'cart_full'::TEXT, 0, \(null9);
                            RETURN;
                        END IF;
                        IF v_others + p_price * p_quantity > 999999999999.99 THEN
                            RETURN QUERY SELECT 'over_total'::TEXT, 0, \(null9);
                            RETURN;
                        END IF;
                        INSERT INTO cart_items (cart_id, product_id, product_name, unit_price, quantity)
                            VALUES (v_cart, p_product, p_name, p_price, p_quantity);
                    END IF;
                    RETURN QUERY SELECT 'ok'::TEXT, 0, c.cart_id, to_char(c.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                            i.cart_item_id, i.product_id, i.product_name, i.unit_price::TEXT, i.quantity
                        FROM carts c LEFT JOIN cart_items i ON i.cart_id = c.cart_id WHERE c.cart_id = v_cart ORDER BY i.cart_item_id;
                END $fn$;

                CREATE OR REPLACE FUNCTION order_service_set_item(p_user BIGINT, p_product BIGINT, p_quantity INTEGER)
                RETURNS TABLE (outcome TEXT, current_quantity INTEGER, r_cart_id BIGINT, r_created_at TEXT,
                               r_cart_item_id BIGINT, r_product_id BIGINT, r_product_name TEXT, r_unit_price TEXT, r_quantity INTEGER)
                LANGUAGE plpgsql AS $fn$
                DECLARE v_cart BIGINT; v_rows INTEGER; v_price NUMERIC; v_others NUMERIC;
                BEGIN
                    SELECT c.cart_id INTO v_cart FROM carts c WHERE c.user_id = p_user FOR UPDATE;
                    IF NOT FOUND THEN
                        RETURN QUERY SELECT 'not_found'::TEXT, 0, \(null9);
                        RETURN;
                    END IF;
                    IF p_quantity = 0 THEN
                        DELETE FROM cart_items i WHERE i.cart_id = v_cart AND i.product_id = p_product;
                    ELSE
                        SELECT i.unit_price INTO v_price FROM cart_items i WHERE i.cart_id = v_cart AND i.product_id = p_product;
                        IF FOUND THEN
                            SELECT coalesce(sum(i.unit_price * i.quantity), 0) INTO v_others
                                FROM cart_items i WHERE i.cart_id = v_cart AND i.product_id <> p_product;
                            IF v_others + v_price * p_quantity > 999999999999.99 THEN
                                RETURN QUERY SELECT 'over_total'::TEXT, 0, \(null9);
                                RETURN;
                            END IF;
                        END IF;
                        UPDATE cart_items i SET quantity = p_quantity WHERE i.cart_id = v_cart AND i.product_id = p_product;
                    END IF;
                    GET DIAGNOSTICS v_rows = ROW_COUNT;
                    IF v_rows = 0 THEN
                        RETURN QUERY SELECT 'not_found'::TEXT, 0, \(null9);
                        RETURN;
                    END IF;
                    RETURN QUERY SELECT 'ok'::TEXT, 0, c.cart_id, to_char(c.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                            i.cart_item_id, i.product_id, i.product_name, i.unit_price::TEXT, i.quantity
                        FROM carts c LEFT JOIN cart_items i ON i.cart_id = c.cart_id WHERE c.cart_id = v_cart ORDER BY i.cart_item_id;
                END $fn$;

                -- Order totals within the same bound (checked for new rows; older rows are read
                -- back and refused one by one, never crash the service).
                ALTER TABLE orders ADD CONSTRAINT orders_total_within_max CHECK (total_price <= 999999999999.99) NOT VALID;
                """),
        Migration(
            version: 7, name: "crash-loop breaker: running instances, unclean exits, records in progress",
            sql: """
                -- One row per running process of a consumer group; application_name is the one
                -- its PostgreSQL sessions carry, so a row without a session is a dead process.
                CREATE TABLE order_service_runs (
                    group_id         TEXT NOT NULL,
                    run_id           TEXT NOT NULL,
                    application_name TEXT NOT NULL,
                    started_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
                    heartbeat_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
                    PRIMARY KEY (group_id, run_id)
                );
                -- When an instance of the group was last found dead (shared by the whole group:
                -- whichever instance finds it, the partitions may move to any other).
                CREATE TABLE order_service_unclean_exits (
                    group_id TEXT PRIMARY KEY,
                    seen_at  TIMESTAMPTZ NOT NULL,
                    runs     BIGINT NOT NULL
                );
                -- Records on probation in progress, and the last run that started each; attempts
                -- counts the runs that had it in progress. One row per record, not per partition:
                -- earlier records redelivered after a crash must not erase the culprit's count.
                -- A row is deleted once its record was answered; what a crash leaves stays.
                CREATE TABLE order_service_in_progress (
                    group_id      TEXT NOT NULL,
                    topic         TEXT NOT NULL,
                    partition     INTEGER NOT NULL,
                    record_offset BIGINT NOT NULL,
                    run_id        TEXT NOT NULL,
                    attempts      INTEGER NOT NULL,
                    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
                    PRIMARY KEY (group_id, topic, partition, record_offset)
                );
                """),
        Migration(
            version: 8, name: "outbox: ordering keys (one order's notifications in status order)",
            sql: """
                -- Rows with the same ordering key are sent one after another in id order, whatever
                -- instance relays them: a row is taken only when no older row of its key is left.
                ALTER TABLE outbox ADD COLUMN ordering_key TEXT;
                CREATE INDEX outbox_by_ordering_key ON outbox (ordering_key, id) WHERE ordering_key IS NOT NULL;
                """),
        Migration(
            version: 9, name: "cart batch: operation 'claim' (a reply stored with the batch, no cart touched)",
            sql: """
                -- As version 5, plus 'claim': the key is claimed and its reply stored with the
                -- batch's others; no cart is read or changed (one row, outcome 'ok'). Replies that
                -- need no transaction of their own (errors, list_orders) ride with the next batch
                -- instead of taking a round trip each.
                CREATE OR REPLACE FUNCTION order_service_cart_batch(
                    p_keys TEXT[], p_ops TEXT[], p_users BIGINT[], p_products BIGINT[], p_names TEXT[],
                    p_prices NUMERIC[], p_quantities INTEGER[], p_max_quantity INTEGER, p_max_lines INTEGER)
                RETURNS TABLE (r_index INTEGER, outcome TEXT, current_quantity INTEGER, r_cart_id BIGINT, r_created_at TEXT,
                               r_cart_item_id BIGINT, r_product_id BIGINT, r_product_name TEXT, r_unit_price TEXT, r_quantity INTEGER)
                LANGUAGE plpgsql AS $fn$
                DECLARE i INTEGER;
                BEGIN
                    FOR i IN 1 .. coalesce(array_length(p_keys, 1), 0) LOOP
                        INSERT INTO processed_requests (idempotency_key, reply) VALUES (p_keys[i], '')
                            ON CONFLICT DO NOTHING;
                        IF NOT FOUND THEN
                            RETURN QUERY SELECT i, 'duplicate'::TEXT, 0, NULL::BIGINT, NULL::TEXT, NULL::BIGINT, NULL::BIGINT, NULL::TEXT, NULL::TEXT, NULL::INTEGER;
                            CONTINUE;
                        END IF;
                        IF p_ops[i] = 'add' THEN
                            RETURN QUERY SELECT i, a.* FROM order_service_add_item(
                                p_users[i], p_products[i], p_names[i], p_prices[i], p_quantities[i], p_max_quantity, p_max_lines) a;
                        ELSIF p_ops[i] = 'set' THEN
                            RETURN QUERY SELECT i, s.* FROM order_service_set_item(p_users[i], p_products[i], p_quantities[i]) s;
                        ELSIF p_ops[i] = 'claim' THEN
                            RETURN QUERY SELECT i, 'ok'::TEXT, 0, NULL::BIGINT, NULL::TEXT, NULL::BIGINT, NULL::BIGINT, NULL::TEXT, NULL::TEXT, NULL::INTEGER;
                        ELSIF p_ops[i] = 'get' THEN
                            RETURN QUERY SELECT i, 'ok'::TEXT, 0, c.cart_id, to_char(c.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                                    ci.cart_item_id, ci.product_id, ci.product_name, ci.unit_price::TEXT, ci.quantity
                                FROM carts c LEFT JOIN cart_items ci ON ci.cart_id = c.cart_id WHERE c.user_id = p_users[i]
                                ORDER BY ci.cart_item_id;
                            IF NOT FOUND THEN
                                RETURN QUERY SELECT i, 'ok'::TEXT, 0, NULL::BIGINT, NULL::TEXT, NULL::BIGINT, NULL::BIGINT, NULL::TEXT, NULL::TEXT, NULL::INTEGER;
                            END IF;
                        ELSE
                            RAISE EXCEPTION 'unknown cart batch operation %', p_ops[i];
                        END IF;
                    END LOOP;
                END $fn$;
                """),
    ]
}

/// The line columns of a cart function's outcome row that carries no line.
private let null9 = "NULL::BIGINT, NULL::TEXT, NULL::BIGINT, NULL::BIGINT, NULL::TEXT, NULL::TEXT, NULL::INTEGER"

/// RFC 3339 UTC with milliseconds, formatted by the database so no clock or locale of ours is involved.
/// Only for SQL built once (`static let`): a statement's text is its key in the statement cache, and
/// building it per query cost CPU for nothing.
func timestampSQL(_ column: String) -> String { #"to_char(\#(column) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"# }

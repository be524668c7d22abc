-- +goose Up
CREATE TABLE orders (
    id           TEXT PRIMARY KEY,
    customer_id  TEXT NOT NULL,
    status       TEXT NOT NULL,            -- PENDING, CONFIRMED, SHIPPED, CANCELLED
    reason       TEXT NOT NULL DEFAULT '',
    total_amount BIGINT NOT NULL,          -- minor units
    currency     TEXT NOT NULL,
    saga         TEXT NOT NULL,            -- orchestrated, choreographed
    version      BIGINT NOT NULL,          -- optimistic concurrency
    created_at   BIGINT NOT NULL,          -- unix microseconds, UTC
    updated_at   BIGINT NOT NULL
);
CREATE INDEX orders_by_customer ON orders (customer_id, created_at);

CREATE TABLE order_lines (
    order_id    TEXT NOT NULL REFERENCES orders (id),
    product_id  TEXT NOT NULL,
    name        TEXT NOT NULL,
    quantity    BIGINT NOT NULL,
    unit_amount BIGINT NOT NULL,           -- the price when ordered, in the order's currency
    PRIMARY KEY (order_id, product_id)
);

-- The orchestrated saga of each order: the step it stands at survives a
-- restart, so every saga in flight resumes.
CREATE TABLE sagas (
    order_id      TEXT PRIMARY KEY REFERENCES orders (id),
    step          TEXT NOT NULL,           -- RESERVING, CHARGING, RELEASING, DONE
    cancel_reason TEXT NOT NULL DEFAULT '',
    payment_token TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX sagas_in_flight ON sagas (step, updated_at);

-- Idempotency-Key of POST /api/orders, per customer.
CREATE TABLE idempotency_keys (
    customer_id  TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    order_id     TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (customer_id, key)
);

-- +goose Down
DROP TABLE idempotency_keys;
DROP TABLE sagas;
DROP TABLE order_lines;
DROP TABLE orders;

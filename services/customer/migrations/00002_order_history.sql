-- +goose Up
-- Each customer's order history, kept from the order context's events
-- (order.created, .confirmed, .cancelled, .shipped): the customer context's
-- own copy, never a read of the order service's database. At most the 20
-- most recent orders per customer are kept (adapters.HistoryLimit).
CREATE TABLE order_history (
    order_id     TEXT PRIMARY KEY,
    customer_id  TEXT NOT NULL,
    status       TEXT NOT NULL,              -- PENDING, CONFIRMED, CANCELLED, SHIPPED
    reason       TEXT NOT NULL DEFAULT '',   -- why it was CANCELLED
    -- Known once order.created is applied (placed = 1); an order heard of
    -- by a later event first waits for it with placed = 0.
    placed       INTEGER NOT NULL DEFAULT 0,
    total_amount BIGINT NOT NULL DEFAULT 0,  -- minor units
    currency     TEXT NOT NULL DEFAULT '',
    item_count   BIGINT NOT NULL DEFAULT 0,  -- sum of the lines' quantities
    version      BIGINT NOT NULL,            -- ordinal of the newest event applied (domain.OrderEvent.Ordinal)
    created_at   BIGINT NOT NULL,            -- unix microseconds, UTC
    updated_at   BIGINT NOT NULL
);
CREATE INDEX order_history_by_customer ON order_history (customer_id, created_at);

-- One row per customer with a history. Writing it takes that row's lock on
-- PostgreSQL, so the history writes of one customer follow each other and
-- each prune counts every order committed before it.
CREATE TABLE order_history_customers (
    customer_id TEXT PRIMARY KEY
);

-- +goose Down
DROP TABLE order_history_customers;
DROP TABLE order_history;

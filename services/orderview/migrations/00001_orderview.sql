-- +goose Up

-- Projections and where each stands. A projection's batch updates its row
-- first, which serialises the batches of one projection (PostgreSQL row
-- lock; SQLite has one writer anyway) and checks that no rebuild started
-- since the batch was read: a rebuild bumps the generation.
CREATE TABLE projections (
    name       TEXT PRIMARY KEY,
    generation BIGINT NOT NULL,
    rebuilt_at BIGINT NOT NULL DEFAULT 0  -- unix microseconds, UTC; 0 never
);

-- The last stream sequence each projection applied, per stream, written in
-- the transaction of the rows it changed.
CREATE TABLE checkpoints (
    projection TEXT NOT NULL,
    stream     TEXT NOT NULL,
    sequence   BIGINT NOT NULL,
    PRIMARY KEY (projection, stream)
);

-- The order read model (projection "orderview"): one row per order, with
-- what other contexts said about it copied in, so a read is one query.
CREATE TABLE orders (
    id              TEXT PRIMARY KEY,
    customer_id     TEXT NOT NULL,
    customer_name   TEXT NOT NULL,
    status          TEXT NOT NULL,
    reason          TEXT NOT NULL,
    items           TEXT NOT NULL,   -- JSON array of lines
    total_amount    BIGINT NOT NULL, -- minor units
    currency        TEXT NOT NULL,
    saga            TEXT NOT NULL,
    payment_status  TEXT NOT NULL,
    shipment_id     TEXT NOT NULL,
    tracking_number TEXT NOT NULL,
    shipped_at      BIGINT NOT NULL, -- unix microseconds, UTC; 0 not shipped
    created         INTEGER NOT NULL, -- 1 once order.created is applied
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    version         BIGINT NOT NULL
);
CREATE INDEX orders_by_customer ON orders (customer_id, created_at, id);

-- Customers' names (customer.registered, customer.updated) and orders'
-- payment statuses (payment.*), kept apart from the rows so that they reach
-- an order whose events come later.
CREATE TABLE customer_names (
    customer_id TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    named_at    BIGINT NOT NULL
);
CREATE TABLE payment_statuses (
    order_id TEXT PRIMARY KEY,
    status   TEXT NOT NULL
);

-- The analytics read model (projection "analytics"): the facts of each
-- order, aggregated by the statistics queries.
CREATE TABLE order_facts (
    order_id       TEXT PRIMARY KEY,
    created        INTEGER NOT NULL,
    saga           TEXT NOT NULL,
    total_amount   BIGINT NOT NULL,
    currency       TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    confirmed_at   BIGINT NOT NULL, -- 0 when not confirmed
    cancelled_at   BIGINT NOT NULL, -- 0 when not cancelled
    reason         TEXT NOT NULL,
    -- Derived from the facts above when they change, for the aggregates:
    confirmed_hour BIGINT NOT NULL, -- unix seconds of the hour; 0 when unknown
    outcome        TEXT NOT NULL,   -- confirmed, cancelled or ''
    duration_ms    BIGINT NOT NULL  -- created to outcome; -1 when unknown
);
CREATE INDEX order_facts_by_hour ON order_facts (confirmed_hour, currency);
CREATE INDEX order_facts_by_saga ON order_facts (saga, outcome);

-- +goose Down
DROP TABLE order_facts;
DROP TABLE payment_statuses;
DROP TABLE customer_names;
DROP TABLE orders;
DROP TABLE checkpoints;
DROP TABLE projections;

-- +goose Up
-- Orders are event streams now (the eventstore's tables, created at start),
-- so a saga no longer points at a row of orders: sagas is rebuilt without
-- that foreign key. The orders and order_lines tables of earlier versions
-- are imported into the event store at start and then left unused.
CREATE TABLE sagas_v3 (
    order_id      TEXT PRIMARY KEY,
    step          TEXT NOT NULL,           -- RESERVING, CHARGING, COMPENSATING, REACTING, DONE
    cancel_reason TEXT NOT NULL DEFAULT '',
    payment_token TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    updated_at    BIGINT NOT NULL,
    awaiting      TEXT NOT NULL DEFAULT '',
    deadline      BIGINT NOT NULL DEFAULT 0
);
INSERT INTO sagas_v3 (order_id, step, cancel_reason, payment_token, attempts, updated_at, awaiting, deadline)
    SELECT order_id, step, cancel_reason, payment_token, attempts, updated_at, awaiting, deadline FROM sagas;
DROP TABLE sagas;
ALTER TABLE sagas_v3 RENAME TO sagas;
CREATE INDEX sagas_in_flight ON sagas (step, updated_at);
CREATE INDEX sagas_by_deadline ON sagas (deadline);

-- The durable timer of shipping: a row exists while an order is CONFIRMED
-- and not yet shipped.
CREATE TABLE shipments (
    order_id TEXT PRIMARY KEY,
    due_at   BIGINT NOT NULL              -- unix microseconds, UTC
);
CREATE INDEX shipments_due ON shipments (due_at);

-- +goose Down
DROP TABLE shipments;

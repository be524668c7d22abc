-- +goose Up
-- One payment per order: the unique order id makes charge and refund
-- idempotent per order, and a VOIDED row blocks a charge that comes late.
CREATE TABLE payments (
    id                 TEXT PRIMARY KEY,             -- UUIDv7
    order_id           TEXT NOT NULL UNIQUE,
    customer_id        TEXT NOT NULL,
    amount             BIGINT NOT NULL,              -- minor units
    currency           TEXT NOT NULL,                -- ISO 4217
    status             TEXT NOT NULL,                -- PENDING, CAPTURED, DECLINED, REFUNDED, VOIDED
    reason             TEXT NOT NULL DEFAULT '',
    provider_charge_id TEXT NOT NULL DEFAULT '',
    provider_refund_id TEXT NOT NULL DEFAULT '',
    created_at         BIGINT NOT NULL,              -- unix micros, UTC
    updated_at         BIGINT NOT NULL
);

-- +goose Down
DROP TABLE payments;

-- +goose Up
-- The saga mode of the payment's order: a choreographed payment is refunded
-- when inventory fails the order, an orchestrated one only on command.
ALTER TABLE payments ADD COLUMN saga TEXT NOT NULL DEFAULT 'orchestrated';

-- +goose Down
ALTER TABLE payments DROP COLUMN saga;

-- +goose Up
-- Whether a charge of the payment may have reached the provider: set
-- before any charge but the first delivery's. A payment whose charge was
-- never sent may be failed without the provider's answer (its circuit
-- breaker open); one that may have been sent waits for the answer, since
-- the provider may have captured it.
ALTER TABLE payments ADD COLUMN charge_sent BIGINT NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE payments DROP COLUMN charge_sent;

-- +goose Up
-- The lines of choreographed orders, replicated from order.created: in the
-- choreographed saga inventory reserves when it sees payment.completed,
-- which carries no lines.
CREATE TABLE choreographed_orders (
    order_id   TEXT PRIMARY KEY,
    lines      TEXT NOT NULL,   -- JSON [{"product_id","quantity"}]
    created_at BIGINT NOT NULL
);

-- +goose Down
DROP TABLE choreographed_orders;

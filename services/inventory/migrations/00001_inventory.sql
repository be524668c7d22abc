-- +goose Up
CREATE TABLE products (
    id             TEXT PRIMARY KEY,
    sku            TEXT NOT NULL UNIQUE,
    name           TEXT NOT NULL,
    price_amount   BIGINT NOT NULL,  -- minor units
    price_currency TEXT NOT NULL,    -- ISO 4217
    available      BIGINT NOT NULL CHECK (available >= 0)
);

-- One row per order that asked for stock: what it holds, or why it holds
-- none. The order id as key makes reserve and release idempotent.
CREATE TABLE reservations (
    order_id   TEXT PRIMARY KEY,
    status     TEXT NOT NULL,            -- HELD, FAILED, RELEASED
    reason     TEXT NOT NULL DEFAULT '',
    product_id TEXT NOT NULL DEFAULT '',
    updated_at BIGINT NOT NULL
);

CREATE TABLE reservation_lines (
    order_id   TEXT NOT NULL REFERENCES reservations (order_id),
    product_id TEXT NOT NULL,
    quantity   BIGINT NOT NULL,
    PRIMARY KEY (order_id, product_id)
);

-- +goose Down
DROP TABLE reservation_lines;
DROP TABLE reservations;
DROP TABLE products;

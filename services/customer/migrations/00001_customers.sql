-- +goose Up
CREATE TABLE customers (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    roles         TEXT NOT NULL,   -- comma-separated
    password_hash TEXT NOT NULL,   -- argon2id, PHC string format
    created_at    BIGINT NOT NULL  -- unix microseconds, UTC
);

-- Keys that sign access tokens. Kept in the service's own database so that
-- tokens stay valid across restarts and every instance signs alike.
CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,  -- RFC 7638 thumbprint
    algorithm   TEXT NOT NULL,
    private_key TEXT NOT NULL,     -- PKCS #8, PEM
    created_at  BIGINT NOT NULL
);

-- +goose Down
DROP TABLE signing_keys;
DROP TABLE customers;

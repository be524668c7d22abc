-- +goose Up
-- Machine clients of the OAuth 2.0 client credentials grant (POST
-- /oauth/token), seeded at start from the service's configuration.
CREATE TABLE clients (
    client_id   TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,   -- hex SHA-256 of the secret; the secret itself is never stored
    name        TEXT NOT NULL,
    scopes      TEXT NOT NULL,   -- space-separated, as in the token's scope claim
    roles       TEXT NOT NULL,   -- comma-separated, as customers.roles
    created_at  BIGINT NOT NULL  -- unix microseconds, UTC
);

-- +goose Down
DROP TABLE clients;

-- +goose Up
-- Compensations a saga waits for (comma-separated: refund, release) and the
-- deadline of its current forward step (unix microseconds; 0 for none).
ALTER TABLE sagas ADD COLUMN awaiting TEXT NOT NULL DEFAULT '';
ALTER TABLE sagas ADD COLUMN deadline BIGINT NOT NULL DEFAULT 0;
CREATE INDEX sagas_by_deadline ON sagas (deadline);

-- +goose Down
DROP INDEX sagas_by_deadline;
ALTER TABLE sagas DROP COLUMN deadline;
ALTER TABLE sagas DROP COLUMN awaiting;

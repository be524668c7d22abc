package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

const (
	txAttempts   = 5
	txRetryDelay = 10 * time.Millisecond // doubles each attempt, jittered
)

// InTx runs fn in a transaction and commits it, or rolls it back when fn
// returns an error, which InTx then returns unchanged.
//
// When the database reports a transient conflict (PostgreSQL serialization
// failure or deadlock, SQLite BUSY or LOCKED), from fn or from BEGIN/COMMIT,
// the whole of fn runs again after a short jittered pause, a few times at
// most; so fn must have no effects outside tx.
func (db *DB) InTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return db.inTx(ctx, nil, fn)
}

// ReadTx runs fn in a read-only transaction: a consistent snapshot of
// several queries. On SQLite it does not take the write lock that InTx's
// IMMEDIATE transactions take, so reads do not queue behind writers.
func (db *DB) ReadTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return db.inTx(ctx, &sql.TxOptions{ReadOnly: true}, fn)
}

func (db *DB) inTx(ctx context.Context, opts *sql.TxOptions, fn func(tx *sql.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := db.runTx(ctx, opts, fn)
		if err == nil || attempt == txAttempts || !isTransient(err) {
			return err
		}
		// Jitter in [d/2, d) spreads out the callers that conflicted.
		d := txRetryDelay << (attempt - 1)
		d = d/2 + rand.N(d/2)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
}

func (db *DB) runTx(ctx context.Context, opts *sql.TxOptions, fn func(tx *sql.Tx) error) error {
	if db.writer != nil && (opts == nil || !opts.ReadOnly) {
		db.writer.Lock()
		defer db.writer.Unlock()
	}
	tx, err := db.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	// Also rolls back when fn panics; after Commit it is a no-op.
	defer func() { _ = tx.Rollback() }()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit transaction: %w", err)
	}
	return nil
}

// PostgreSQL error codes (SQLSTATE).
const (
	pgUniqueViolation      = "23505"
	pgSerializationFailure = "40001"
	pgDeadlockDetected     = "40P01"
)

// isTransient reports whether err is a conflict that running the same
// transaction again may not meet.
func isTransient(err error) bool {
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		return pgErr.Code == pgSerializationFailure || pgErr.Code == pgDeadlockDetected
	}
	if sqliteErr, ok := errors.AsType[*sqlite.Error](err); ok {
		// Extended codes (SQLITE_BUSY_SNAPSHOT, ...) keep the primary code in the low byte.
		primary := sqliteErr.Code() & 0xff
		return primary == sqlite3.SQLITE_BUSY || primary == sqlite3.SQLITE_LOCKED
	}
	return false
}

// IsUniqueViolation reports whether err, possibly wrapped, is a unique or
// primary-key constraint violation on either engine.
func IsUniqueViolation(err error) bool {
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		return pgErr.Code == pgUniqueViolation
	}
	if sqliteErr, ok := errors.AsType[*sqlite.Error](err); ok {
		code := sqliteErr.Code()
		return code == sqlite3.SQLITE_CONSTRAINT_UNIQUE || code == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

// Package inbox makes message consumers idempotent: a consumer records the
// id of each message it applies in the same transaction as the effect, so a
// redelivery (the broker's at-least-once delivery, a crash before the ack)
// finds the id recorded, does nothing and is acknowledged.
//
// Records are kept per consumer, since two consumers of one message each
// apply it once, and only as long as the broker may redeliver: Prune drops
// older ones.
package inbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/storage"
)

// Inbox records the messages consumers have applied.
type Inbox struct {
	db      *storage.DB
	name    string
	table   string // quoted
	lockKey int64
	// claimSQL is the claim's insert, built once: it runs with every
	// message a consumer handles (storage keeps it prepared on SQLite).
	claimSQL string
}

// New returns the inbox kept in table (default "inbox", in the default
// schema) of db.
func New(db *storage.DB, table string) *Inbox {
	if table == "" {
		table = "inbox"
	}
	h := fnv.New64a()
	h.Write([]byte("mercato/inbox/" + table))
	t := quote(table)
	return &Inbox{
		db: db, name: table, table: t, lockKey: int64(h.Sum64()),
		claimSQL: `INSERT INTO ` + t + ` (consumer, message_id, handled_at) VALUES ($1, $2, $3) ON CONFLICT (consumer, message_id) DO NOTHING`,
	}
}

// quote makes name a quoted SQL identifier, valid on both engines.
func quote(name string) string {
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}

// EnsureSchema creates the inbox table if it is missing.
func (i *Inbox) EnsureSchema(ctx context.Context) error {
	err := i.db.InTx(ctx, func(tx *sql.Tx) error {
		if i.db.Dialect() == storage.Postgres {
			// Replicas starting together would race on PostgreSQL's catalog.
			if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", i.lockKey); err != nil {
				return err
			}
		}
		for _, ddl := range []string{
			`CREATE TABLE IF NOT EXISTS ` + i.table + ` (
	consumer TEXT NOT NULL,
	message_id TEXT NOT NULL,
	handled_at BIGINT NOT NULL,
	PRIMARY KEY (consumer, message_id)
)`,
			// Prune deletes by age.
			`CREATE INDEX IF NOT EXISTS ` + quote(i.name+"_handled_at") + ` ON ` + i.table + ` (handled_at)`,
		} {
			if _, err := tx.ExecContext(ctx, ddl); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("create inbox table %s: %w", i.name, err)
	}
	return nil
}

// Claim records that consumer handles messageID in tx. first is false when
// it was already recorded by a committed transaction: the caller then skips
// the effect and commits (or returns nil from its handler). A concurrent
// claim of the same id waits for the first transaction to end, so exactly
// one of them is first.
func (i *Inbox) Claim(ctx context.Context, tx *sql.Tx, consumer, messageID string) (first bool, err error) {
	if consumer == "" || messageID == "" {
		return false, errors.New("inbox claim: consumer and message id are required")
	}
	res, err := tx.ExecContext(ctx, i.claimSQL, consumer, messageID, time.Now().UnixMicro())
	if err != nil {
		return false, fmt.Errorf("inbox claim %s for %s: %w", messageID, consumer, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("inbox claim %s for %s: %w", messageID, consumer, err)
	}
	return n == 1, nil
}

// Prune deletes the records of messages handled before cutoff and returns
// how many. Keep them longer than the broker may redeliver (the consumer's
// AckWait times its MaxDeliver attempts, and the stream's Duplicates window
// for republished events).
func (i *Inbox) Prune(ctx context.Context, before time.Time) (int64, error) {
	res, err := i.db.ExecContext(ctx, `DELETE FROM `+i.table+` WHERE handled_at < $1`, before.UnixMicro())
	if err != nil {
		return 0, fmt.Errorf("prune inbox %s: %w", i.name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("prune inbox %s: %w", i.name, err)
	}
	return n, nil
}

// Handle returns a bus handler that applies each message once for consumer
// (usually the durable consumer's name): it opens a transaction, claims the
// message id, and runs fn in that transaction only when the claim is first.
// A redelivered message is acknowledged without running fn. A message
// without id cannot be deduplicated and is rejected as bus.ErrPoison.
//
// fn may run more than once for one delivery when the transaction meets a
// transient conflict (storage.DB.InTx), so it must have no effect outside tx.
func (i *Inbox) Handle(consumer string, fn func(ctx context.Context, tx *sql.Tx, m bus.Message, data []byte) error) bus.Handler {
	return func(ctx context.Context, m bus.Message, data []byte) error {
		return i.apply(ctx, consumer, m, func(tx *sql.Tx) error { return fn(ctx, tx, m, data) })
	}
}

// On is Handle with a typed payload, as bus.On: the payload is decoded into
// a new T, and a payload that does not decode is bus.ErrPoison.
func On[T any, PT interface {
	*T
	proto.Message
}](i *Inbox, consumer string, fn func(ctx context.Context, tx *sql.Tx, m bus.Message, ev PT) error) bus.Handler {
	return bus.On(func(ctx context.Context, m bus.Message, ev PT) error {
		return i.apply(ctx, consumer, m, func(tx *sql.Tx) error { return fn(ctx, tx, m, ev) })
	})
}

func (i *Inbox) apply(ctx context.Context, consumer string, m bus.Message, fn func(tx *sql.Tx) error) error {
	if m.ID == "" {
		return fmt.Errorf("%s without %s cannot be handled once: %w", m.Type, bus.HeaderID, bus.ErrPoison)
	}
	return i.db.InTx(ctx, func(tx *sql.Tx) error {
		first, err := i.Claim(ctx, tx, consumer, m.ID)
		if err != nil || !first {
			return err
		}
		return fn(tx)
	})
}

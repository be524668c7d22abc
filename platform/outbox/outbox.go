// Package outbox is a transactional outbox: a service writes its state change
// and the events it publishes in one local transaction, and a relay publishes
// them afterwards, in order, with Nats-Msg-Id = event id.
//
// A crash between commit and publish loses nothing: the rows wait in the
// table for the next relay. A crash between publish and mark publishes again,
// and the broker drops the duplicate inside the stream's Duplicates window.
//
// Events are encoded when they are added (bus.Encode), so their trace context
// and correlation id are those of the request that wrote them, not of the
// relay goroutine that sends them later.
//
// The relay marks events sent by deleting their rows, not with a sent_at
// column: the table holds only what is pending, so the relay's ordered read
// and Pending stay cheap without a cleanup job, and a published row has no
// further use (the stream is the history). On PostgreSQL rows are deleted in
// the batch's transaction by their exact sequence numbers, never by range: a
// transaction that commits late can make a lower sequence number visible
// after higher ones were read. On SQLite, where one writer at a time makes
// sequence order the commit order, the relay keeps a high-water mark of what
// it published, reads only above it, and deletes up to it by range in a
// goroutine of its own: the delete waits for the file's write lock, and
// waiting for it between batches slowed every hop of a saga.
//
// Order: events are published in the order of their sequence column, one
// batch at a time; a batch is sent pipelined on one connection and its acks
// awaited in order (bus.PublishEnvelopes), and only the acknowledged prefix
// counts as sent. On SQLite the single writer makes that the commit order.
// On PostgreSQL it is the commit order of causally related transactions
// (concurrent ones have no order to keep), and relays of several replicas on
// one database take turns through a transaction-scoped advisory lock held
// for the whole batch. A publish failing in mid-batch can leave a later
// event stored before an earlier one is sent again.
//
// A publish that fails stops the relay until it succeeds: an event that can
// never be published (no stream takes its subject) holds up those behind it,
// and the relay's warning names it.
package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/runtime"
	"github.com/mercato-shop/mercato/platform/storage"
)

// Config configures an outbox.
type Config struct {
	// Table names the outbox table, in the default schema; default "outbox".
	Table string
	// Sweep is how often the relay looks for rows without a wake-up (rows
	// committed by another process, or left by a crash); default 1s.
	Sweep time.Duration
	// Batch bounds the rows read and published at once; default 100.
	Batch int
	// Logger defaults to a logger that discards.
	Logger *slog.Logger
}

// Retry delays after a failed publish: doubling from minBackoff up to maxBackoff.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// Outbox stores events in the caller's transaction and relays them to the
// bus. It is safe for concurrent use.
type Outbox struct {
	db    *storage.DB
	bus   *bus.Bus
	cfg   Config
	log   *slog.Logger
	table string // quoted
	// The statements on table, built once (storage keeps them prepared on
	// SQLite).
	insertSQL, selectSQL, countSQL string
	// lockKey is the PostgreSQL advisory lock that relays of one table take turns on.
	lockKey int64
	// selectAboveSQL reads pending rows above the high-water mark (SQLite).
	selectAboveSQL, deleteUpToSQL string

	// sent is the highest sequence number published, on SQLite; rows up to
	// it are deleted later by mark. Guarded by batchMu.
	sent int64
	// marked is the highest sequence number deleted. Guarded by markMu.
	marked int64
	markMu sync.Mutex
	// marks signals the marking goroutine that sent has moved.
	marks chan struct{}

	// wake is signalled after a commit that added events; a buffer of one
	// coalesces signals and never blocks the committer.
	wake chan struct{}
	// batchMu runs one batch at a time in this process (relay and Flush).
	batchMu sync.Mutex

	mu    sync.Mutex
	relay *relay // nil when not running
}

// New returns an outbox on db that publishes through b.
func New(db *storage.DB, b *bus.Bus, cfg Config) *Outbox {
	if cfg.Table == "" {
		cfg.Table = "outbox"
	}
	if cfg.Sweep <= 0 {
		cfg.Sweep = time.Second
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 100
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := fnv.New64a()
	h.Write([]byte("mercato/outbox/" + cfg.Table))
	table := quote(cfg.Table)
	return &Outbox{
		db:        db,
		bus:       b,
		cfg:       cfg,
		log:       log.With("component", "outbox", "table", cfg.Table),
		table:     table,
		insertSQL: `INSERT INTO ` + table + ` (id, subject, header, data, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING`,
		selectSQL: `SELECT seq, id, subject, header, data FROM ` + table + ` ORDER BY seq LIMIT $1`,
		countSQL:  `SELECT COUNT(*) FROM ` + table + ` WHERE seq > $1`,
		lockKey:   int64(h.Sum64()),
		wake:      make(chan struct{}, 1),
		marks:     make(chan struct{}, 1),

		selectAboveSQL: `SELECT seq, id, subject, header, data FROM ` + table + ` WHERE seq > $1 ORDER BY seq LIMIT $2`,
		deleteUpToSQL:  `DELETE FROM ` + table + ` WHERE seq <= $1`,
	}
}

// quote makes name a quoted SQL identifier, valid on both engines.
func quote(name string) string {
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}

// EnsureSchema creates the outbox table if it is missing.
func (o *Outbox) EnsureSchema(ctx context.Context) error {
	// The ordering column and the byte type differ between engines.
	seq, blob := "seq INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB"
	if o.db.Dialect() == storage.Postgres {
		seq, blob = "seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "BYTEA"
	}
	ddl := `CREATE TABLE IF NOT EXISTS ` + o.table + ` (
	` + seq + `,
	id TEXT NOT NULL UNIQUE,
	subject TEXT NOT NULL,
	header TEXT NOT NULL,
	data ` + blob + ` NOT NULL,
	created_at BIGINT NOT NULL
)`
	err := o.db.InTx(ctx, func(tx *sql.Tx) error {
		// Replicas starting together would race on PostgreSQL's catalog.
		if err := o.lock(ctx, tx); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, ddl)
		return err
	})
	if err != nil {
		return fmt.Errorf("create outbox table %s: %w", o.cfg.Table, err)
	}
	return nil
}

// lock takes the table's advisory lock until tx ends, on PostgreSQL; on
// SQLite the write lock of the file already serialises writers. A relay
// waits for its turn rather than trying and polling: the wait ends with the
// other relay's batch, and its rows are then read fresh.
func (o *Outbox) lock(ctx context.Context, tx *sql.Tx) error {
	if o.db.Dialect() != storage.Postgres {
		return nil
	}
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", o.lockKey); err != nil {
		return fmt.Errorf("lock outbox %s: %w", o.cfg.Table, err)
	}
	return nil
}

// Add encodes events with ctx, so they carry the caller's trace and
// correlation id, and inserts them in tx. It does not publish: the relay does
// once tx has committed; call Wake then, or use InTx which does. An event
// whose id is already pending is not added twice.
func (o *Outbox) Add(ctx context.Context, tx *sql.Tx, events ...bus.Event) error {
	for _, ev := range events {
		env, err := o.bus.Encode(ctx, ev)
		if err != nil {
			return fmt.Errorf("outbox: %w", err)
		}
		header, err := json.Marshal(env.Header)
		if err != nil {
			return fmt.Errorf("outbox: encode header of %s %s: %w", env.Subject, env.ID, err)
		}
		data := env.Data
		if data == nil {
			data = []byte{} // an empty payload, not NULL
		}
		if _, err := tx.ExecContext(ctx, o.insertSQL, env.ID, env.Subject, string(header), data, time.Now().UnixMicro()); err != nil {
			return fmt.Errorf("outbox: add %s %s: %w", env.Subject, env.ID, err)
		}
	}
	return nil
}

// InTx runs fn in a transaction (storage.DB.InTx, with its retries), passing
// an add function bound to that transaction, and wakes the relay once the
// transaction has committed. It is how a service changes state and publishes:
//
//	err := ob.InTx(ctx, func(tx *sql.Tx, add func(...bus.Event) error) error {
//		if err := store.Save(ctx, tx, order); err != nil {
//			return err
//		}
//		return add(bus.Event{Type: "order.created", Subject: order.ID, Data: msg})
//	})
func (o *Outbox) InTx(ctx context.Context, fn func(tx *sql.Tx, add func(events ...bus.Event) error) error) error {
	added := false
	err := o.db.InTx(ctx, func(tx *sql.Tx) error {
		return fn(tx, func(events ...bus.Event) error {
			added = added || len(events) > 0
			return o.Add(ctx, tx, events...)
		})
	})
	if err != nil {
		return err
	}
	if added {
		o.Wake()
	}
	return nil
}

// Wake tells the relay that events were committed. It never blocks; wake-ups
// sent while the relay is busy coalesce into one.
func (o *Outbox) Wake() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// Pending counts the events not yet published.
func (o *Outbox) Pending(ctx context.Context) (int, error) {
	o.batchMu.Lock()
	sent := o.sent
	o.batchMu.Unlock()
	var n int
	if err := o.db.QueryRowContext(ctx, o.countSQL, sent).Scan(&n); err != nil {
		return 0, fmt.Errorf("count pending events in %s: %w", o.cfg.Table, err)
	}
	return n, nil
}

// Flush publishes every event pending now, in order, deletes the rows of
// those published, and returns the first error. On PostgreSQL it waits for
// another relay's batch to end.
func (o *Outbox) Flush(ctx context.Context) error {
	for {
		n, err := o.batch(ctx, ctx)
		if err != nil {
			return err
		}
		if n < o.cfg.Batch {
			return o.mark(ctx)
		}
	}
}

// mark deletes the rows published up to the high-water mark (SQLite; on
// PostgreSQL batch deletes its rows itself and sent stays zero).
func (o *Outbox) mark(ctx context.Context) error {
	o.markMu.Lock()
	defer o.markMu.Unlock()
	o.batchMu.Lock()
	sent := o.sent
	o.batchMu.Unlock()
	if sent <= o.marked {
		return nil
	}
	if _, err := o.db.ExecContext(ctx, o.deleteUpToSQL, sent); err != nil {
		return fmt.Errorf("mark events up to %d sent in %s: %w", sent, o.cfg.Table, err)
	}
	o.marked = sent
	return nil
}

// querier is a database or a transaction.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// row is one pending event.
type row struct {
	seq int64
	env bus.Envelope
}

// batch publishes up to Batch pending rows in order and deletes those
// published. It returns how many were published and the publish error that
// stopped it, if any. ctx bounds the wait for rows; once rows are in hand,
// only work can interrupt their publishing and deletion.
func (o *Outbox) batch(ctx, work context.Context) (int, error) {
	o.batchMu.Lock()
	defer o.batchMu.Unlock()

	// Publishing into the client's reconnect buffer would only time out:
	// fail fast while the connection is down.
	if err := o.bus.Ready(ctx); err != nil {
		return 0, fmt.Errorf("relay outbox %s: %w", o.cfg.Table, err)
	}

	// On PostgreSQL the batch runs in a transaction holding the table's
	// advisory lock, so replicas' relays take turns and each reads what the
	// previous one left. On SQLite no transaction is held while publishing:
	// it would block every writer of the file.
	var q querier = o.db
	var tx *sql.Tx
	if o.db.Dialect() == storage.Postgres {
		var err error
		if tx, err = o.db.BeginTx(work, nil); err != nil {
			return 0, fmt.Errorf("relay outbox %s: begin: %w", o.cfg.Table, err)
		}
		defer func() { _ = tx.Rollback() }() // no-op after Commit
		if err := o.lock(ctx, tx); err != nil {
			return 0, fmt.Errorf("relay: %w", err)
		}
		q = tx
	}

	rows, err := o.read(ctx, q)
	if err != nil || len(rows) == 0 {
		return 0, err
	}
	n, pubErr := o.publish(work, rows)
	if n > 0 && tx == nil {
		o.sent = rows[n-1].seq
		select {
		case o.marks <- struct{}{}:
		default:
		}
	}
	if n > 0 && tx != nil {
		if err := o.delete(work, q, rows[:n]); err != nil {
			// Published but still pending: sent again later and deduped.
			return 0, errors.Join(pubErr, err)
		}
	}
	if tx != nil {
		if err := tx.Commit(); err != nil {
			return 0, errors.Join(pubErr, fmt.Errorf("relay outbox %s: commit: %w", o.cfg.Table, err))
		}
	}
	return n, pubErr
}

func (o *Outbox) read(ctx context.Context, q querier) ([]row, error) {
	query, args := o.selectSQL, []any{o.cfg.Batch}
	if o.db.Dialect() != storage.Postgres {
		query, args = o.selectAboveSQL, []any{o.sent, o.cfg.Batch}
	}
	rs, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("read outbox %s: %w", o.cfg.Table, err)
	}
	defer rs.Close()
	var out []row
	for rs.Next() {
		var r row
		var header string
		if err := rs.Scan(&r.seq, &r.env.ID, &r.env.Subject, &header, &r.env.Data); err != nil {
			return nil, fmt.Errorf("read outbox %s: %w", o.cfg.Table, err)
		}
		if err := json.Unmarshal([]byte(header), &r.env.Header); err != nil {
			return nil, fmt.Errorf("read outbox %s: header of %s: %w", o.cfg.Table, r.env.ID, err)
		}
		out = append(out, r)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("read outbox %s: %w", o.cfg.Table, err)
	}
	return out, nil
}

// publish sends a batch pipelined (bus.PublishEnvelopes): in order, acks
// awaited in order. It returns how many leading rows were acknowledged; the
// rest stay pending and are sent again, deduplicated by the broker.
func (o *Outbox) publish(ctx context.Context, rows []row) (int, error) {
	envs := make([]bus.Envelope, len(rows))
	for i, r := range rows {
		envs[i] = r.env
	}
	return o.bus.PublishEnvelopes(ctx, envs)
}

// delete marks rows sent in one statement that names each of them.
func (o *Outbox) delete(ctx context.Context, q querier, rows []row) error {
	var sb strings.Builder
	sb.WriteString(`DELETE FROM ` + o.table + ` WHERE seq IN (`)
	args := make([]any, len(rows))
	for i, r := range rows {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString("$" + strconv.Itoa(i+1))
		args[i] = r.seq
	}
	sb.WriteString(")")
	if _, err := q.ExecContext(ctx, sb.String(), args...); err != nil {
		return fmt.Errorf("mark %d events sent in %s: %w", len(rows), o.cfg.Table, err)
	}
	return nil
}

// Hook runs the relay as part of a service's lifecycle.
func (o *Outbox) Hook() runtime.Hook {
	return runtime.Hook{Name: "outbox relay " + o.cfg.Table, Start: o.Start, Stop: o.Stop}
}

// Package eventstore keeps aggregates as streams of events in a service's
// own database (SQLite or PostgreSQL): append with an expected version, read
// a stream from or up to a version, snapshots, upcasting of old event
// schemas on read, and one global order of all events.
//
// Appends run in the caller's transaction, so the events of a command, the
// process state it moves (a saga) and the messages it publishes (the
// transactional outbox) commit together or not at all: one write per
// command.
//
// Concurrency is optimistic. A writer says which version it read; if the
// stream has moved since, Append fails with a *ConflictError (errors.Is
// ErrConflict) and the caller reads again and decides: retry the command on
// the new state, or reject it.
//
// Global order: every event gets a position, and positions are assigned in
// commit order, so a reader that has seen position N never later finds a
// new event below N. SQLite has one writer at a time; on PostgreSQL appends
// take a transaction-scoped advisory lock, which serialises appending
// transactions from their first append to their commit.
package eventstore

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mercato-shop/mercato/platform/storage"
)

// ErrConflict: the stream was not at the version the writer expected.
var ErrConflict = errors.New("event stream changed concurrently")

// ConflictError says which stream moved, and to where.
type ConflictError struct {
	Stream   string
	Expected int64
	Actual   int64
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("append to %s: expected version %d, stream is at %d", e.Stream, e.Expected, e.Actual)
}

// Is makes errors.Is(err, ErrConflict) hold.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// ErrDuplicateID: an event with that id is stored already. Not a conflict:
// reading again and retrying with the same id would fail the same way.
var ErrDuplicateID = errors.New("event id already stored")

// NewEvent is an event to append. Data is its payload encoded at Schema, the
// current schema version of Type, as UTF-8 text (JSON by convention): it is
// stored readable, for the audit trail and for SQL.
type NewEvent struct {
	ID     string // unique across the store; the id it is published with
	Type   string
	Schema int
	Data   []byte
	At     time.Time // when it happened; recorded as UTC
}

// Event is a stored event, upcast to the current schema of its type.
type Event struct {
	Position   int64 // global, in commit order
	ID         string
	Stream     string
	Version    int64 // 1 for a stream's first event
	Type       string
	Schema     int
	Data       []byte
	RecordedAt time.Time
}

// Snapshot is an aggregate's state as of a version, encoded by its owner.
type Snapshot struct {
	Stream  string
	Version int64
	Schema  int
	Data    []byte
}

// Upcaster turns the payload of an event of Type at schema From into schema
// From+1. Chains run on read until no upcaster matches.
type Upcaster struct {
	Type string
	From int
	Up   func(data []byte) ([]byte, error)
}

// Config configures a store.
type Config struct {
	// Table names the events table; snapshots go to Table+"_snapshots".
	// Default "events".
	Table string
	// SnapshotEvery: SnapshotDue says a snapshot is due each time a stream
	// crosses a multiple of it; 0 turns snapshots off.
	SnapshotEvery int64
	// Upcasters of old schemas, applied on every read.
	Upcasters []Upcaster
}

// Querier is a database or a transaction to read from.
type Querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Store is an event store on one database. It is safe for concurrent use.
type Store struct {
	db        *storage.DB
	cfg       Config
	upcasters map[upcastKey]func([]byte) ([]byte, error)
	lockKey   int64

	events, snapshots string // quoted table names
	appendSQL, versionSQL, streamSQL, allSQL,
	snapshotSaveSQL, snapshotLoadSQL string
}

type upcastKey struct {
	typ  string
	from int
}

// New returns a store on db; call EnsureSchema before use.
func New(db *storage.DB, cfg Config) (*Store, error) {
	if cfg.Table == "" {
		cfg.Table = "events"
	}
	if cfg.SnapshotEvery < 0 {
		return nil, errors.New("eventstore: SnapshotEvery must not be negative")
	}
	up := make(map[upcastKey]func([]byte) ([]byte, error), len(cfg.Upcasters))
	for _, u := range cfg.Upcasters {
		k := upcastKey{u.Type, u.From}
		if u.Type == "" || u.From < 1 || u.Up == nil {
			return nil, fmt.Errorf("eventstore: upcaster of %q from schema %d needs a type, a schema from 1 and a function", u.Type, u.From)
		}
		if _, dup := up[k]; dup {
			return nil, fmt.Errorf("eventstore: two upcasters of %s from schema %d", u.Type, u.From)
		}
		up[k] = u.Up
	}
	h := fnv.New64a()
	h.Write([]byte("mercato/eventstore/" + cfg.Table))
	ev, sn := quote(cfg.Table), quote(cfg.Table+"_snapshots")
	cols := `position, id, stream, version, type, schema_version, data, recorded_at`
	return &Store{
		db: db, cfg: cfg, upcasters: up, lockKey: int64(h.Sum64()),
		events: ev, snapshots: sn,
		appendSQL:       `INSERT INTO ` + ev + ` (id, stream, version, type, schema_version, data, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING position`,
		versionSQL:      `SELECT COALESCE(MAX(version), 0) FROM ` + ev + ` WHERE stream = $1`,
		streamSQL:       `SELECT ` + cols + ` FROM ` + ev + ` WHERE stream = $1 AND version > $2 AND version <= $3 ORDER BY version`,
		allSQL:          `SELECT ` + cols + ` FROM ` + ev + ` WHERE position > $1 ORDER BY position LIMIT $2`,
		snapshotSaveSQL: `INSERT INTO ` + sn + ` (stream, version, schema_version, data, taken_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (stream) DO UPDATE SET version = excluded.version, schema_version = excluded.schema_version, data = excluded.data, taken_at = excluded.taken_at WHERE ` + sn + `.version < excluded.version`,
		snapshotLoadSQL: `SELECT version, schema_version, data FROM ` + sn + ` WHERE stream = $1`,
	}, nil
}

func quote(name string) string {
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}

// EnsureSchema creates the events and snapshots tables if they are missing.
func (s *Store) EnsureSchema(ctx context.Context) error {
	position := "position INTEGER PRIMARY KEY AUTOINCREMENT"
	if s.db.Dialect() == storage.Postgres {
		position = "position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
	}
	ddl := []string{
		`CREATE TABLE IF NOT EXISTS ` + s.events + ` (
	` + position + `,
	id TEXT NOT NULL UNIQUE,
	stream TEXT NOT NULL,
	version BIGINT NOT NULL,
	type TEXT NOT NULL,
	schema_version INTEGER NOT NULL,
	data TEXT NOT NULL,
	recorded_at BIGINT NOT NULL,
	UNIQUE (stream, version)
)`,
		// One snapshot per stream, the latest: a load needs no more, and a
		// read as of an older version replays from the start instead.
		`CREATE TABLE IF NOT EXISTS ` + s.snapshots + ` (
	stream TEXT PRIMARY KEY,
	version BIGINT NOT NULL,
	schema_version INTEGER NOT NULL,
	data TEXT NOT NULL,
	taken_at BIGINT NOT NULL
)`,
	}
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := s.lock(ctx, tx); err != nil { // replicas starting together
			return err
		}
		for _, q := range ddl {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("create event store %s: %w", s.cfg.Table, err)
	}
	return nil
}

func (s *Store) lock(ctx context.Context, tx *sql.Tx) error {
	if s.db.Dialect() != storage.Postgres {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, s.lockKey); err != nil {
		return fmt.Errorf("lock event store %s: %w", s.cfg.Table, err)
	}
	return nil
}

// Append adds events to stream in tx, after version expected (0 for a new
// stream), and returns them as stored. If the stream is not at expected it
// returns a *ConflictError and appends nothing.
func (s *Store) Append(ctx context.Context, tx *sql.Tx, stream string, expected int64, events ...NewEvent) ([]Event, error) {
	if stream == "" {
		return nil, errors.New("append: no stream")
	}
	if err := s.lock(ctx, tx); err != nil {
		return nil, err
	}
	// Every event is checked before the first insert: a rejected batch
	// leaves nothing in the caller's transaction.
	for i, ne := range events {
		if ne.ID == "" || ne.Type == "" || ne.Schema < 1 {
			return nil, fmt.Errorf("append to %s: event %d needs an id, a type and a schema from 1", stream, i)
		}
		// PostgreSQL's TEXT refuses NUL too; refuse it on both engines alike.
		if !utf8.Valid(ne.Data) || bytes.IndexByte(ne.Data, 0) >= 0 {
			return nil, fmt.Errorf("append to %s: event %d (%s): data is not UTF-8 text", stream, i, ne.Type)
		}
	}
	actual, err := s.Version(ctx, tx, stream)
	if err != nil {
		return nil, err
	}
	if actual != expected {
		return nil, &ConflictError{Stream: stream, Expected: expected, Actual: actual}
	}
	out := make([]Event, 0, len(events))
	for i, ne := range events {
		at := ne.At
		if at.IsZero() {
			at = time.Now()
		}
		at = at.UTC().Truncate(time.Microsecond) // as stored, so as read back
		e := Event{ID: ne.ID, Stream: stream, Version: expected + int64(i) + 1, Type: ne.Type, Schema: ne.Schema, Data: ne.Data, RecordedAt: at}
		err := tx.QueryRowContext(ctx, s.appendSQL, e.ID, stream, e.Version, e.Type, e.Schema, string(e.Data), at.UnixMicro()).Scan(&e.Position)
		if storage.IsUniqueViolation(err) {
			// The version was checked above under the append lock (SQLite:
			// the write lock of the transaction), so it is the id.
			return nil, fmt.Errorf("append %s %s to %s: %w", e.Type, e.ID, stream, ErrDuplicateID)
		}
		if err != nil {
			return nil, fmt.Errorf("append %s to %s: %w", e.Type, stream, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// Version is the stream's current version, 0 when it has no events.
func (s *Store) Version(ctx context.Context, q Querier, stream string) (int64, error) {
	var v int64
	if err := q.QueryRowContext(ctx, s.versionSQL, stream).Scan(&v); err != nil {
		return 0, fmt.Errorf("version of %s: %w", stream, err)
	}
	return v, nil
}

// Read returns the events of stream after version after and up to version
// upTo (0: to the end), upcast, in order.
func (s *Store) Read(ctx context.Context, q Querier, stream string, after, upTo int64) ([]Event, error) {
	if upTo <= 0 {
		upTo = 1<<63 - 1
	}
	rows, err := q.QueryContext(ctx, s.streamSQL, stream, after, upTo)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", stream, err)
	}
	return s.scan(rows)
}

// ReadAll returns up to limit events of every stream after global position
// after, in commit order: a subscriber keeps the last position it handled
// and asks again from there.
func (s *Store) ReadAll(ctx context.Context, q Querier, after int64, limit int) ([]Event, error) {
	if limit < 1 {
		return nil, fmt.Errorf("read all events: limit %d, want at least 1", limit)
	}
	rows, err := q.QueryContext(ctx, s.allSQL, after, limit)
	if err != nil {
		return nil, fmt.Errorf("read all events: %w", err)
	}
	return s.scan(rows)
}

func (s *Store) scan(rows *sql.Rows) ([]Event, error) {
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var e Event
		var data string
		var recorded int64
		if err := rows.Scan(&e.Position, &e.ID, &e.Stream, &e.Version, &e.Type, &e.Schema, &data, &recorded); err != nil {
			return nil, fmt.Errorf("read events: %w", err)
		}
		e.Data, e.RecordedAt = []byte(data), time.UnixMicro(recorded).UTC()
		if err := s.upcast(&e); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	return out, nil
}

// upcast brings e to the newest schema its upcasters know.
func (s *Store) upcast(e *Event) error {
	for {
		up, ok := s.upcasters[upcastKey{e.Type, e.Schema}]
		if !ok {
			return nil
		}
		data, err := up(e.Data)
		if err != nil {
			return fmt.Errorf("upcast %s %s (%s v%d) from schema %d: %w", e.Type, e.ID, e.Stream, e.Version, e.Schema, err)
		}
		e.Data, e.Schema = data, e.Schema+1
	}
}

// SnapshotDue says whether a stream that moved from version before to after
// has crossed a multiple of SnapshotEvery.
func (s *Store) SnapshotDue(before, after int64) bool {
	n := s.cfg.SnapshotEvery
	return n > 0 && after/n > before/n
}

// SaveSnapshot stores snap in tx as its stream's latest, unless a newer one
// is stored already.
func (s *Store) SaveSnapshot(ctx context.Context, tx *sql.Tx, snap Snapshot) error {
	if _, err := tx.ExecContext(ctx, s.snapshotSaveSQL, snap.Stream, snap.Version, snap.Schema, string(snap.Data), time.Now().UnixMicro()); err != nil {
		return fmt.Errorf("save snapshot of %s at %d: %w", snap.Stream, snap.Version, err)
	}
	return nil
}

// LoadSnapshot returns the stream's latest snapshot if it is at upTo or
// older (upTo 0: any); ok is false when there is none to use.
func (s *Store) LoadSnapshot(ctx context.Context, q Querier, stream string, upTo int64) (snap Snapshot, ok bool, err error) {
	var data string
	err = q.QueryRowContext(ctx, s.snapshotLoadSQL, stream).Scan(&snap.Version, &snap.Schema, &data)
	if errors.Is(err, sql.ErrNoRows) {
		return Snapshot{}, false, nil
	}
	if err != nil {
		return Snapshot{}, false, fmt.Errorf("load snapshot of %s: %w", stream, err)
	}
	if upTo > 0 && snap.Version > upTo {
		return Snapshot{}, false, nil
	}
	snap.Stream, snap.Data = stream, []byte(data)
	return snap, true, nil
}

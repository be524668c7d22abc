package eventstore_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mercato-shop/mercato/platform/eventstore"
	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/platform/storage/storagetest"
)

// waitFor bounds every test, the concurrent ones included.
const waitFor = 60 * time.Second

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

// each runs fn on every engine (storagetest), each run with a database of
// its own; tests also name their own tables.
func each(t *testing.T, fn func(t *testing.T, db *storage.DB)) {
	storagetest.Each(t, nil, fn)
}

// sqliteDB returns a fresh SQLite database, for tests of what does not
// depend on the engine.
func sqliteDB(t *testing.T) *storage.DB {
	t.Helper()
	return storagetest.Open(t, storagetest.Engine{Name: "sqlite", DSN: storage.SQLiteDSN(t.TempDir(), "test")}, nil)
}

// newStore returns a store on db with its tables created.
func newStore(t testing.TB, db *storage.DB, cfg eventstore.Config) *eventstore.Store {
	t.Helper()
	s, err := eventstore.New(db, cfg)
	if err != nil {
		t.Fatalf("new store: %v", err)
	}
	if err := s.EnsureSchema(testContext(t)); err != nil {
		t.Fatalf("ensure schema: %v", err)
	}
	return s
}

func newID() string { return uuid.Must(uuid.NewV7()).String() }

// event returns an event of typ at schema 1 with a fresh id.
func event(typ, data string) eventstore.NewEvent {
	return eventstore.NewEvent{ID: newID(), Type: typ, Schema: 1, Data: []byte(data)}
}

// tryAppend appends events in a transaction of its own, committed when
// Append succeeds.
func tryAppend(ctx context.Context, db *storage.DB, s *eventstore.Store, stream string, expected int64, events ...eventstore.NewEvent) ([]eventstore.Event, error) {
	var out []eventstore.Event
	err := db.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = s.Append(ctx, tx, stream, expected, events...)
		return err
	})
	return out, err
}

// appendEvents is tryAppend that must succeed.
func appendEvents(t testing.TB, s *eventstore.Store, db *storage.DB, stream string, expected int64, events ...eventstore.NewEvent) []eventstore.Event {
	t.Helper()
	out, err := tryAppend(testContext(t), db, s, stream, expected, events...)
	if err != nil {
		t.Fatalf("append %d events to %s at %d: %v", len(events), stream, expected, err)
	}
	return out
}

func read(t testing.TB, s *eventstore.Store, q eventstore.Querier, stream string, after, upTo int64) []eventstore.Event {
	t.Helper()
	events, err := s.Read(testContext(t), q, stream, after, upTo)
	if err != nil {
		t.Fatalf("read %s (%d, %d]: %v", stream, after, upTo, err)
	}
	return events
}

func readAll(t testing.TB, s *eventstore.Store, q eventstore.Querier, after int64, limit int) []eventstore.Event {
	t.Helper()
	events, err := s.ReadAll(testContext(t), q, after, limit)
	if err != nil {
		t.Fatalf("read all after %d: %v", after, err)
	}
	return events
}

func version(t testing.TB, s *eventstore.Store, q eventstore.Querier, stream string) int64 {
	t.Helper()
	v, err := s.Version(testContext(t), q, stream)
	if err != nil {
		t.Fatalf("version of %s: %v", stream, err)
	}
	return v
}

func saveSnapshot(t testing.TB, s *eventstore.Store, db *storage.DB, snap eventstore.Snapshot) {
	t.Helper()
	ctx := testContext(t)
	if err := db.InTx(ctx, func(tx *sql.Tx) error { return s.SaveSnapshot(ctx, tx, snap) }); err != nil {
		t.Fatalf("save snapshot: %v", err)
	}
}

func ids[E eventstore.Event | eventstore.NewEvent](events []E) []string {
	out := make([]string, len(events))
	for i, e := range events {
		switch e := any(e).(type) {
		case eventstore.Event:
			out[i] = e.ID
		case eventstore.NewEvent:
			out[i] = e.ID
		}
	}
	return out
}

func versions(events []eventstore.Event) []int64 {
	out := make([]int64, len(events))
	for i, e := range events {
		out[i] = e.Version
	}
	return out
}

// span returns the versions from..to.
func span(from, to int64) []int64 {
	out := []int64{}
	for v := from; v <= to; v++ {
		out = append(out, v)
	}
	return out
}

// checkPositions fails unless positions rise strictly from above after.
func checkPositions(t testing.TB, after int64, events []eventstore.Event) {
	t.Helper()
	for _, e := range events {
		if e.Position <= after {
			t.Errorf("event %s at position %d follows position %d", e.ID, e.Position, after)
		}
		after = e.Position
	}
}

// followed is what a subscriber of the global order read.
type followed struct {
	events []eventstore.Event
	err    error
}

// follow reads the global order in small pages, as a subscriber does, until
// done is closed and it has read everything committed before. As positions
// are handed out in commit order, it never steps past an event that commits
// later, so it ends up with every event.
func follow(ctx context.Context, s *eventstore.Store, db *storage.DB, done <-chan struct{}) <-chan followed {
	out := make(chan followed, 1)
	go func() {
		var r followed
		var after int64
		defer func() { out <- r }()
		for {
			finished := false
			select {
			case <-done:
				finished = true // this read then sees every commit
			default:
			}
			page, err := s.ReadAll(ctx, db, after, 7)
			if err != nil {
				r.err = err
				return
			}
			for _, e := range page {
				if e.Position <= after {
					r.err = fmt.Errorf("event %s at position %d read after position %d", e.ID, e.Position, after)
					return
				}
				after = e.Position
				r.events = append(r.events, e)
			}
			if finished && len(page) == 0 {
				return
			}
			if len(page) == 0 {
				time.Sleep(time.Millisecond) // poll interval
			}
		}
	}()
	return out
}

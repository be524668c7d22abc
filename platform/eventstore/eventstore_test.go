package eventstore_test

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mercato-shop/mercato/platform/eventstore"
	"github.com/mercato-shop/mercato/platform/storage"
)

func TestAppend_NewStreamReadsBackAsStored(t *testing.T) {
	each(t, func(t *testing.T, db *storage.DB) {
		s := newStore(t, db, eventstore.Config{Table: "es_append"})
		at := time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.FixedZone("UTC+5", 5*60*60))
		in := []eventstore.NewEvent{
			{ID: newID(), Type: "order.placed", Schema: 1, Data: []byte(`{"n":1}`), At: at},
			{ID: newID(), Type: "order.paid", Schema: 2, Data: []byte(`{"n":2}`), At: at.Add(time.Second)},
			{ID: newID(), Type: "order.shipped", Schema: 7, Data: []byte(`{"n":3}`), At: at.Add(2 * time.Second)},
		}
		if v := version(t, s, db, "order-1"); v != 0 {
			t.Fatalf("version of a new stream = %d, want 0", v)
		}
		appended := appendEvents(t, s, db, "order-1", 0, in...)
		got := read(t, s, db, "order-1", 0, 0)
		if len(appended) != len(in) || len(got) != len(in) {
			t.Fatalf("append returned %d events and read %d, want %d", len(appended), len(got), len(in))
		}
		for i, e := range got {
			ne := in[i]
			if e.ID != ne.ID || e.Stream != "order-1" || e.Version != int64(i+1) || e.Type != ne.Type || e.Schema != ne.Schema || !bytes.Equal(e.Data, ne.Data) {
				t.Errorf("event %d reads as %+v, want %+v at version %d of order-1", i, e, ne, i+1)
			}
			if want := ne.At.Truncate(time.Microsecond); !e.RecordedAt.Equal(want) || e.RecordedAt.Location() != time.UTC {
				t.Errorf("event %d recorded at %v, want %v in UTC", i, e.RecordedAt, want.UTC())
			}
			if a := appended[i]; a.Position != e.Position || a.ID != e.ID || a.Version != e.Version || a.Stream != e.Stream {
				t.Errorf("append returned event %d at position %d, %s v%d (%s); read finds position %d, %s v%d (%s)",
					i, a.Position, a.Stream, a.Version, a.ID, e.Position, e.Stream, e.Version, e.ID)
			}
			if a := appended[i]; !a.RecordedAt.Equal(e.RecordedAt) || a.RecordedAt.Location() != time.UTC {
				t.Errorf("append returned event %d recorded at %v, read back %v", i, a.RecordedAt, e.RecordedAt)
			}
		}
		checkPositions(t, 0, got)
		if v := version(t, s, db, "order-1"); v != 3 {
			t.Errorf("version = %d, want 3", v)
		}

		// Without At the event is recorded at the time of the append.
		before := time.Now().Truncate(time.Microsecond)
		appendEvents(t, s, db, "order-2", 0, event("order.placed", `{}`))
		after := time.Now()
		second := read(t, s, db, "order-2", 0, 0)
		if len(second) != 1 {
			t.Fatalf("order-2 holds %d events, want 1", len(second))
		}
		if r := second[0].RecordedAt; r.Before(before) || r.After(after) || r.Location() != time.UTC {
			t.Errorf("event without At recorded at %v, want a UTC time in [%v, %v]", r, before, after)
		}
		if second[0].Position <= got[2].Position {
			t.Errorf("later append got position %d, not above %d", second[0].Position, got[2].Position)
		}
	})
}

func TestRead_AfterAndUpToBoundTheVersions(t *testing.T) {
	each(t, func(t *testing.T, db *storage.DB) {
		s := newStore(t, db, eventstore.Config{Table: "es_bounds"})
		var in []eventstore.NewEvent
		for i := range 5 {
			e := event("counter.incremented", fmt.Sprintf(`{"i":%d}`, i))
			e.ID = fmt.Sprintf("event-%d", 9-i) // sorting against versions
			in = append(in, e)
		}
		appendEvents(t, s, db, "counter-1", 0, in[:2]...)
		appendEvents(t, s, db, "counter-1", 2, in[2:]...)
		appendEvents(t, s, db, "counter-2", 0, event("counter.incremented", `{}`)) // must not leak into counter-1

		for _, c := range []struct {
			after, upTo int64
			want        []int64
		}{
			{0, 0, span(1, 5)},
			{2, 0, span(3, 5)},
			{0, 3, span(1, 3)}, // the stream as it was at version 3
			{1, 4, span(2, 4)},
			{0, 1, span(1, 1)},
			{4, 5, span(5, 5)},
			{0, 99, span(1, 5)},
			{5, 0, nil},
			{3, 3, nil},
			{9, 0, nil},
		} {
			got := read(t, s, db, "counter-1", c.after, c.upTo)
			if !slices.Equal(versions(got), c.want) {
				t.Errorf("read (%d, %d] = versions %v, want %v", c.after, c.upTo, versions(got), c.want)
			}
			for _, e := range got {
				if e.ID != in[e.Version-1].ID {
					t.Errorf("version %d is event %s, want %s", e.Version, e.ID, in[e.Version-1].ID)
				}
			}
		}
	})
}

func TestRead_UnknownStreamHasNoEventsAtVersion0(t *testing.T) {
	each(t, func(t *testing.T, db *storage.DB) {
		s := newStore(t, db, eventstore.Config{Table: "es_unknown"})
		if got := read(t, s, db, "nobody", 0, 0); len(got) != 0 {
			t.Errorf("empty store: read finds %d events", len(got))
		}
		if got := readAll(t, s, db, 0, 10); len(got) != 0 {
			t.Errorf("empty store: read all finds %d events", len(got))
		}
		appendEvents(t, s, db, "order-1", 0, event("order.placed", `{}`))
		for _, stream := range []string{"nobody", "order-", "order-10", "ORDER-1"} {
			if got := read(t, s, db, stream, 0, 0); len(got) != 0 {
				t.Errorf("read %q finds %d events of another stream", stream, len(got))
			}
			if v := version(t, s, db, stream); v != 0 {
				t.Errorf("version of %q = %d, want 0", stream, v)
			}
		}
	})
}

func TestAppend_StaleVersionConflictsAndAppendsNothing(t *testing.T) {
	each(t, func(t *testing.T, db *storage.DB) {
		ctx := testContext(t)
		s := newStore(t, db, eventstore.Config{Table: "es_conflict"})
		first := appendEvents(t, s, db, "cart-1", 0, event("cart.opened", `{}`), event("item.added", `{"sku":"a"}`))
		batch := []eventstore.NewEvent{event("item.added", `{"sku":"b"}`), event("item.added", `{"sku":"c"}`), event("cart.closed", `{}`)}

		for _, expected := range []int64{0, 1, 3} {
			// The transaction commits whatever Append left in it: a conflict must leave nothing.
			var appendErr error
			err := db.InTx(ctx, func(tx *sql.Tx) error {
				_, appendErr = s.Append(ctx, tx, "cart-1", expected, batch...)
				return nil
			})
			if err != nil {
				t.Fatalf("commit: %v", err)
			}
			if !errors.Is(appendErr, eventstore.ErrConflict) {
				t.Fatalf("append at %d to a stream at 2 = %v, want ErrConflict", expected, appendErr)
			}
			ce, ok := errors.AsType[*eventstore.ConflictError](appendErr)
			if !ok {
				t.Fatalf("append at %d: %T is no *ConflictError", expected, appendErr)
			}
			if want := (eventstore.ConflictError{Stream: "cart-1", Expected: expected, Actual: 2}); *ce != want {
				t.Errorf("conflict = %+v, want %+v", *ce, want)
			}
		}
		if got := read(t, s, db, "cart-1", 0, 0); !slices.Equal(ids(got), ids(first)) {
			t.Errorf("after conflicts the stream holds %v, want only %v", ids(got), ids(first))
		}
		if v := version(t, s, db, "cart-1"); v != 2 {
			t.Errorf("version = %d after conflicts, want 2", v)
		}
		if got := readAll(t, s, db, 0, 100); len(got) != 2 {
			t.Errorf("store holds %d events after conflicts, want 2", len(got))
		}

		// Nothing of the rejected batch is left: at the right version it appends whole.
		again := appendEvents(t, s, db, "cart-1", 2, batch...)
		if !slices.Equal(versions(again), span(3, 5)) || !slices.Equal(ids(again), ids(batch)) {
			t.Errorf("retry appended versions %v ids %v, want 3..5 and %v", versions(again), ids(again), ids(batch))
		}
	})
}

func TestAppend_RolledBackTransactionLeavesNoEvents(t *testing.T) {
	each(t, func(t *testing.T, db *storage.DB) {
		ctx := testContext(t)
		s := newStore(t, db, eventstore.Config{Table: "es_rollback"})
		boom := errors.New("command failed after appending")
		pending := []eventstore.NewEvent{event("order.placed", `{}`), event("order.paid", `{}`)}
		err := db.InTx(ctx, func(tx *sql.Tx) error {
			if _, err := s.Append(ctx, tx, "order-1", 0, pending...); err != nil {
				return err
			}
			// Visible in the transaction, to no one else before commit.
			if v := version(t, s, tx, "order-1"); v != 2 {
				t.Errorf("version inside the transaction = %d, want 2", v)
			}
			if got := readAll(t, s, db, 0, 10); len(got) != 0 {
				t.Errorf("other readers see %d uncommitted events", len(got))
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("InTx = %v, want %v", err, boom)
		}
		if got := readAll(t, s, db, 0, 10); len(got) != 0 {
			t.Errorf("rolled back events are stored: %v", ids(got))
		}
		if v := version(t, s, db, "order-1"); v != 0 {
			t.Errorf("version after rollback = %d, want 0", v)
		}
		// Their ids and versions are free again.
		got := appendEvents(t, s, db, "order-1", 0, pending...)
		if !slices.Equal(versions(got), span(1, 2)) {
			t.Errorf("append after rollback got versions %v, want 1..2", versions(got))
		}
	})
}

func TestAppend_ConcurrentWritersNeverLoseOrDuplicateEvents(t *testing.T) {
	for _, mode := range []struct {
		name  string
		stale bool // read the version before the transaction: forces conflicts on SQLite too
	}{
		{"VersionReadInTransaction", false},
		{"VersionReadBeforeTransaction", true},
	} {
		t.Run(mode.name, func(t *testing.T) {
			each(t, func(t *testing.T, db *storage.DB) {
				concurrentWriters(t, db, mode.stale)
			})
		})
	}
}

func concurrentWriters(t *testing.T, db *storage.DB, stale bool) {
	const writers, commands = 8, 10
	const stream = "counter-1"
	ctx := testContext(t)
	s := newStore(t, db, eventstore.Config{Table: "es_concurrent"})

	// One command: read the version, append at it; on a conflict read again.
	var conflicts atomic.Int64
	command := func(ne eventstore.NewEvent) error {
		for {
			var expected int64
			var err error
			if stale {
				if expected, err = s.Version(ctx, db, stream); err != nil {
					return err
				}
			}
			err = db.InTx(ctx, func(tx *sql.Tx) error {
				if !stale {
					var err error
					if expected, err = s.Version(ctx, tx, stream); err != nil {
						return err
					}
				}
				_, err := s.Append(ctx, tx, stream, expected, ne)
				return err
			})
			if !errors.Is(err, eventstore.ErrConflict) {
				return err
			}
			conflicts.Add(1)
		}
	}

	// A subscriber follows the global order while the writers commit.
	writersDone := make(chan struct{})
	tailed := follow(ctx, s, db, writersDone)

	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for c := range commands {
				ne := event("counter.incremented", fmt.Sprintf(`{"writer":%d,"command":%d}`, w, c))
				if err := command(ne); err != nil {
					t.Errorf("writer %d, command %d: %v", w, c, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(writersDone)
	tail := <-tailed
	if tail.err != nil {
		t.Fatalf("following the global order: %v", tail.err)
	}
	t.Logf("%d conflicts retried", conflicts.Load())

	const total = writers * commands
	got := read(t, s, db, stream, 0, 0)
	if !slices.Equal(versions(got), span(1, total)) {
		t.Fatalf("stream holds versions %v, want 1..%d without gaps", versions(got), total)
	}
	if v := version(t, s, db, stream); v != total {
		t.Errorf("version = %d, want %d", v, total)
	}
	// Each command's event exactly once, and each writer's in the order it ran them.
	seen := map[string]int{}
	lastOf := make([]int, writers)
	for i := range lastOf {
		lastOf[i] = -1
	}
	for _, e := range got {
		seen[string(e.Data)]++
		var p struct{ Writer, Command int }
		if err := json.Unmarshal(e.Data, &p); err != nil {
			t.Fatalf("event %d: %v", e.Version, err)
		}
		if p.Command != lastOf[p.Writer]+1 {
			t.Errorf("version %d is command %d of writer %d, after its command %d", e.Version, p.Command, p.Writer, lastOf[p.Writer])
		}
		lastOf[p.Writer] = p.Command
	}
	for w := range writers {
		for c := range commands {
			if n := seen[fmt.Sprintf(`{"writer":%d,"command":%d}`, w, c)]; n != 1 {
				t.Errorf("command %d of writer %d is stored %d times, want once", c, w, n)
			}
		}
	}
	all := readAll(t, s, db, 0, 2*total)
	checkPositions(t, 0, all)
	if !slices.Equal(ids(all), ids(got)) {
		t.Errorf("global order %v differs from stream order %v", ids(all), ids(got))
	}
	if !slices.Equal(ids(tail.events), ids(got)) {
		t.Errorf("the subscriber following the global order read %d events %v, want the %d of the stream in order %v",
			len(tail.events), ids(tail.events), total, ids(got))
	}
}

func TestReadAll_FollowerMissesNothingWhileStreamsAppendConcurrently(t *testing.T) {
	each(t, func(t *testing.T, db *storage.DB) {
		const writers, commands = 8, 15
		ctx := testContext(t)
		s := newStore(t, db, eventstore.Config{Table: "es_follow"})
		done := make(chan struct{})
		tailed := follow(ctx, s, db, done)

		// Writers of distinct streams never conflict; only the store orders
		// their commits. Each transaction reads again after appending, which
		// keeps it open a little longer past the append.
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				stream := fmt.Sprintf("stream-%d", w)
				for c := range commands {
					err := db.InTx(ctx, func(tx *sql.Tx) error {
						if _, err := s.Append(ctx, tx, stream, int64(2*c), event("x", `1`), event("x", `2`)); err != nil {
							return err
						}
						_, err := s.Read(ctx, tx, stream, 0, 0)
						return err
					})
					if err != nil {
						t.Errorf("writer %d, command %d: %v", w, c, err)
						return
					}
				}
			})
		}
		wg.Wait()
		close(done)
		tail := <-tailed
		if tail.err != nil {
			t.Fatalf("following the global order: %v", tail.err)
		}
		all := readAll(t, s, db, 0, 10*writers*commands)
		if len(all) != 2*writers*commands {
			t.Fatalf("store holds %d events, want %d", len(all), 2*writers*commands)
		}
		if !slices.Equal(ids(tail.events), ids(all)) {
			missed := map[string]bool{}
			for _, e := range all {
				missed[e.ID] = true
			}
			for _, e := range tail.events {
				delete(missed, e.ID)
			}
			t.Errorf("the follower read %d of %d events; it stepped past %d that committed below a position it had seen",
				len(tail.events), len(all), len(missed))
		}
	})
}

func TestReadAll_GlobalCommitOrderAcrossStreamsPagesEveryEventOnce(t *testing.T) {
	each(t, func(t *testing.T, db *storage.DB) {
		ctx := testContext(t)
		s := newStore(t, db, eventstore.Config{Table: "es_all"})
		// Ids sort against the order of appends: the global order is not theirs.
		next := 99
		ev := func() eventstore.NewEvent {
			e := event("x", `{}`)
			e.ID = fmt.Sprintf("event-%02d", next)
			next--
			return e
		}
		type at struct {
			stream  string
			version int64
		}
		var want []string
		where := map[string]at{}
		add := func(stream string, expected int64, events ...eventstore.NewEvent) {
			for i, e := range events {
				want = append(want, e.ID)
				where[e.ID] = at{stream, expected + int64(i) + 1}
			}
		}
		commit := func(stream string, expected int64, events ...eventstore.NewEvent) {
			appendEvents(t, s, db, stream, expected, events...)
			add(stream, expected, events...)
		}
		commit("a", 0, ev(), ev())
		commit("b", 0, ev())
		commit("c", 0, ev(), ev(), ev())
		commit("a", 2, ev())
		// One command appending to two streams: its events in the order it appended them.
		toB, toA := []eventstore.NewEvent{ev()}, []eventstore.NewEvent{ev(), ev()}
		err := db.InTx(ctx, func(tx *sql.Tx) error {
			if _, err := s.Append(ctx, tx, "b", 1, toB...); err != nil {
				return err
			}
			_, err := s.Append(ctx, tx, "a", 3, toA...)
			return err
		})
		if err != nil {
			t.Fatalf("append to two streams: %v", err)
		}
		add("b", 1, toB...)
		add("a", 3, toA...)
		commit("c", 3, ev())

		all := readAll(t, s, db, 0, 1000)
		if !slices.Equal(ids(all), want) {
			t.Fatalf("global order = %v, want %v", ids(all), want)
		}
		checkPositions(t, 0, all)
		for _, e := range all {
			if w := where[e.ID]; e.Stream != w.stream || e.Version != w.version {
				t.Errorf("event %s is %s v%d, want %s v%d", e.ID, e.Stream, e.Version, w.stream, w.version)
			}
		}

		for _, limit := range []int{1, 2, 3, 4, 5, 10, 11, 100} {
			var paged []eventstore.Event
			var after int64
			for pages := 0; ; pages++ {
				if pages > len(want) {
					t.Fatalf("limit %d: no end after %d pages", limit, pages)
				}
				page := readAll(t, s, db, after, limit)
				if len(page) > limit {
					t.Errorf("limit %d: page of %d events", limit, len(page))
				}
				if len(page) < limit && len(paged)+len(page) < len(want) {
					t.Errorf("limit %d: short page of %d after %d events of %d", limit, len(page), len(paged), len(want))
				}
				if len(page) == 0 {
					break
				}
				paged = append(paged, page...)
				after = page[len(page)-1].Position
			}
			if !slices.Equal(ids(paged), want) {
				t.Errorf("limit %d: pages hold %v, want %v", limit, ids(paged), want)
			}
		}
		if got := readAll(t, s, db, all[3].Position, 2); !slices.Equal(ids(got), ids(all[4:6])) {
			t.Errorf("read 2 after position %d = %v, want %v", all[3].Position, ids(got), ids(all[4:6]))
		}
	})
}

// The schemas of order.placed:
//
//	v1 {"order_id":"o-1","amount":"12.50"}
//	v2 {"order_id":"o-1","amount_minor":1250}
//	v3 {"order_id":"o-1","total":{"minor":1250,"currency":"EUR"}}
//
// and of order.cancelled: v1 {"order_id":"o-1"}, v2 adds a reason.
var errNoAmount = errors.New("no amount")

func placedV1ToV2(data []byte) ([]byte, error) {
	var v1 struct {
		OrderID string `json:"order_id"`
		Amount  string `json:"amount"`
	}
	if err := json.Unmarshal(data, &v1); err != nil {
		return nil, err
	}
	whole, frac, _ := strings.Cut(v1.Amount, ".")
	units, err1 := strconv.ParseInt(whole, 10, 64)
	cents, err2 := strconv.ParseInt(frac, 10, 64)
	if v1.Amount == "" || err1 != nil || err2 != nil || len(frac) != 2 {
		return nil, fmt.Errorf("order %s: %w in %q", v1.OrderID, errNoAmount, v1.Amount)
	}
	return json.Marshal(struct {
		OrderID     string `json:"order_id"`
		AmountMinor int64  `json:"amount_minor"`
	}{v1.OrderID, units*100 + cents})
}

func placedV2ToV3(data []byte) ([]byte, error) {
	var v2 struct {
		OrderID     string `json:"order_id"`
		AmountMinor *int64 `json:"amount_minor"`
	}
	if err := json.Unmarshal(data, &v2); err != nil {
		return nil, err
	}
	if v2.AmountMinor == nil {
		return nil, fmt.Errorf("order %s: %w", v2.OrderID, errNoAmount)
	}
	type money struct {
		Minor    int64  `json:"minor"`
		Currency string `json:"currency"`
	}
	return json.Marshal(struct {
		OrderID string `json:"order_id"`
		Total   money  `json:"total"`
	}{v2.OrderID, money{*v2.AmountMinor, "EUR"}})
}

func cancelledV1ToV2(data []byte) ([]byte, error) {
	var v map[string]any
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, err
	}
	v["reason"] = "unknown"
	return json.Marshal(v)
}

func upcasters() []eventstore.Upcaster {
	return []eventstore.Upcaster{
		{Type: "order.placed", From: 2, Up: placedV2ToV3}, // registered out of order on purpose
		{Type: "order.cancelled", From: 1, Up: cancelledV1ToV2},
		{Type: "order.placed", From: 1, Up: placedV1ToV2},
	}
}

func TestUpcasters_ChainBringsOldEventsToTheCurrentSchemaOnRead(t *testing.T) {
	each(t, func(t *testing.T, db *storage.DB) {
		s := newStore(t, db, eventstore.Config{Table: "es_upcast", Upcasters: upcasters()})
		ev := func(typ string, schema int, data string) eventstore.NewEvent {
			return eventstore.NewEvent{ID: newID(), Type: typ, Schema: schema, Data: []byte(data)}
		}
		type want struct {
			schema int
			data   string
		}
		// Written by writers of different ages; current ones are left byte for byte.
		v3 := `{ "order_id": "o-3", "total": {"minor": 5, "currency": "USD"} }`
		cases := []struct {
			stream string
			in     eventstore.NewEvent
			want   want
		}{
			{"order-1", ev("order.placed", 1, `{"order_id":"o-1","amount":"12.50"}`), want{3, `{"order_id":"o-1","total":{"minor":1250,"currency":"EUR"}}`}},
			{"order-1", ev("order.cancelled", 1, `{"order_id":"o-1"}`), want{2, `{"order_id":"o-1","reason":"unknown"}`}},
			{"order-2", ev("order.placed", 2, `{"order_id":"o-2","amount_minor":999}`), want{3, `{"order_id":"o-2","total":{"minor":999,"currency":"EUR"}}`}},
			{"order-3", ev("order.placed", 3, v3), want{3, v3}},
			{"order-3", ev("order.cancelled", 2, `{"order_id":"o-3", "reason":"fraud"}`), want{2, `{"order_id":"o-3", "reason":"fraud"}`}},
			{"order-3", ev("order.noted", 1, `not json at all`), want{1, `not json at all`}},
		}
		wants := map[string]want{}
		for _, c := range cases {
			appendEvents(t, s, db, c.stream, version(t, s, db, c.stream), c.in)
			wants[c.in.ID] = c.want
		}
		check := func(how string, events []eventstore.Event) {
			t.Helper()
			for _, e := range events {
				w, ok := wants[e.ID]
				if !ok {
					t.Errorf("%s: unexpected event %s", how, e.ID)
					continue
				}
				delete(wants, e.ID)
				if e.Schema != w.schema || string(e.Data) != w.data {
					t.Errorf("%s: %s %s reads at schema %d as %s, want schema %d %s", how, e.Type, e.ID, e.Schema, e.Data, w.schema, w.data)
				}
			}
		}
		saved := maps.Clone(wants)
		check("read", slices.Concat(read(t, s, db, "order-1", 0, 0), read(t, s, db, "order-2", 0, 0), read(t, s, db, "order-3", 0, 0)))
		if len(wants) != 0 {
			t.Errorf("read misses %v", wants)
		}
		wants = saved
		check("read all", readAll(t, s, db, 0, 100))
		if len(wants) != 0 {
			t.Errorf("read all misses %v", wants)
		}
	})
}

func TestUpcasters_GoldenV1RowOfAnOldWriterReadsAtV3(t *testing.T) {
	each(t, func(t *testing.T, db *storage.DB) {
		ctx := testContext(t)
		s := newStore(t, db, eventstore.Config{Table: "es_golden", Upcasters: upcasters()})
		// The row as a writer from before schema 2 stored it.
		const (
			id       = "0190a2b3-c4d5-7e6f-8a9b-0c1d2e3f4a5b"
			v1       = `{"order_id":"o-1","amount":"12.50"}`
			v3       = `{"order_id":"o-1","total":{"minor":1250,"currency":"EUR"}}`
			recorded = int64(1718000000123456)
		)
		_, err := db.ExecContext(ctx, `INSERT INTO es_golden (id, stream, version, type, schema_version, data, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			id, "order-1", 1, "order.placed", 1, v1, recorded)
		if err != nil {
			t.Fatalf("insert v1 row: %v", err)
		}
		for how, events := range map[string][]eventstore.Event{
			"read":     read(t, s, db, "order-1", 0, 0),
			"read all": readAll(t, s, db, 0, 10),
		} {
			if len(events) != 1 {
				t.Fatalf("%s: %d events, want 1", how, len(events))
			}
			e := events[0]
			if e.ID != id || e.Stream != "order-1" || e.Version != 1 || e.Type != "order.placed" || e.Schema != 3 || string(e.Data) != v3 {
				t.Errorf("%s: %+v (data %s), want %s order-1 v1 order.placed at schema 3 with %s", how, e, e.Data, id, v3)
			}
			if want := time.UnixMicro(recorded).UTC(); !e.RecordedAt.Equal(want) || e.RecordedAt.Location() != time.UTC {
				t.Errorf("%s: recorded at %v, want %v", how, e.RecordedAt, want)
			}
		}
		// Upcasting is on read only: the row stays as written.
		var schema int
		var data string
		if err := db.QueryRowContext(ctx, `SELECT schema_version, data FROM es_golden WHERE id = $1`, id).Scan(&schema, &data); err != nil {
			t.Fatal(err)
		}
		if schema != 1 || data != v1 {
			t.Errorf("stored row is now schema %d %s, want 1 %s", schema, data, v1)
		}
		// The old row counts for the stream's version.
		if got := appendEvents(t, s, db, "order-1", 1, event("order.paid", `{}`)); got[0].Version != 2 {
			t.Errorf("append after the old row got version %d, want 2", got[0].Version)
		}
	})
}

func TestUpcasters_FailureNamesTheEvent(t *testing.T) {
	each(t, func(t *testing.T, db *storage.DB) {
		ctx := testContext(t)
		s := newStore(t, db, eventstore.Config{Table: "es_upfail", Upcasters: upcasters()})
		good := appendEvents(t, s, db, "order-1", 0, eventstore.NewEvent{ID: newID(), Type: "order.placed", Schema: 2, Data: []byte(`{"order_id":"o-1","amount_minor":1}`)})
		bad := eventstore.NewEvent{ID: newID(), Type: "order.placed", Schema: 1, Data: []byte(`{"order_id":"o-2"}`)}
		appendEvents(t, s, db, "order-2", 0, bad)

		_, err := s.Read(ctx, db, "order-2", 0, 0)
		_, errAll := s.ReadAll(ctx, db, 0, 10)
		for how, err := range map[string]error{"read": err, "read all": errAll} {
			if !errors.Is(err, errNoAmount) {
				t.Errorf("%s = %v, want the upcaster's error", how, err)
				continue
			}
			for _, name := range []string{bad.ID, "order.placed", "order-2"} {
				if !strings.Contains(err.Error(), name) {
					t.Errorf("%s error %q does not name %s", how, err, name)
				}
			}
		}
		// Other streams still read.
		if got := read(t, s, db, "order-1", 0, 0); len(got) != 1 || got[0].ID != good[0].ID || got[0].Schema != 3 {
			t.Errorf("order-1 reads as %+v, want its event at schema 3", got)
		}
	})
}

func TestNew_RejectsInvalidConfig(t *testing.T) {
	db := sqliteDB(t)
	up := func([]byte) ([]byte, error) { return nil, nil }
	for name, cfg := range map[string]eventstore.Config{
		"duplicate upcaster": {Upcasters: []eventstore.Upcaster{{Type: "a", From: 1, Up: up}, {Type: "b", From: 1, Up: up}, {Type: "a", From: 1, Up: up}}},
		"upcaster no type":   {Upcasters: []eventstore.Upcaster{{Type: "", From: 1, Up: up}}},
		"upcaster from 0":    {Upcasters: []eventstore.Upcaster{{Type: "a", From: 0, Up: up}}},
		"upcaster from -1":   {Upcasters: []eventstore.Upcaster{{Type: "a", From: -1, Up: up}}},
		"upcaster no func":   {Upcasters: []eventstore.Upcaster{{Type: "a", From: 1}}},
		"negative snapshots": {SnapshotEvery: -1},
	} {
		if s, err := eventstore.New(db, cfg); err == nil || s != nil {
			t.Errorf("%s: New = %v, %v; want an error", name, s, err)
		}
	}
	valid := eventstore.Config{Upcasters: []eventstore.Upcaster{{Type: "a", From: 1, Up: up}, {Type: "a", From: 2, Up: up}, {Type: "b", From: 1, Up: up}}}
	if _, err := eventstore.New(db, valid); err != nil {
		t.Errorf("New with a chain and two types: %v", err)
	}
}

func TestSnapshotDue_WhenAStreamCrossesAMultiple(t *testing.T) {
	db := sqliteDB(t)
	never, err := eventstore.New(db, eventstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	every3, err := eventstore.New(db, eventstore.Config{SnapshotEvery: 3})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		before, after int64
		due           bool
	}{
		{0, 1, false},
		{0, 2, false},
		{0, 3, true},
		{2, 3, true},
		{3, 4, false},
		{3, 5, false},
		{4, 5, false},
		{5, 6, true},
		{2, 7, true},  // jumps over 3 and 6
		{1, 10, true}, // over 3, 6 and 9
		{6, 6, false},
		{7, 8, false},
		{8, 9, true},
		{0, 300, true},
	} {
		if got := every3.SnapshotDue(c.before, c.after); got != c.due {
			t.Errorf("every 3: due from %d to %d = %v, want %v", c.before, c.after, got, c.due)
		}
		if never.SnapshotDue(c.before, c.after) {
			t.Errorf("every 0: due from %d to %d", c.before, c.after)
		}
	}
}

func TestSnapshot_LoadsTheLatestUpToAVersion(t *testing.T) {
	each(t, func(t *testing.T, db *storage.DB) {
		ctx := testContext(t)
		s := newStore(t, db, eventstore.Config{Table: "es_snap", SnapshotEvery: 3})
		load := func(stream string, upTo int64) (eventstore.Snapshot, bool) {
			t.Helper()
			snap, ok, err := s.LoadSnapshot(ctx, db, stream, upTo)
			if err != nil {
				t.Fatalf("load snapshot of %s up to %d: %v", stream, upTo, err)
			}
			return snap, ok
		}
		expect := func(upTo int64, want eventstore.Snapshot) {
			t.Helper()
			got, ok := load(want.Stream, upTo)
			if !ok || got.Stream != want.Stream || got.Version != want.Version || got.Schema != want.Schema || !bytes.Equal(got.Data, want.Data) {
				t.Errorf("load up to %d = %+v (data %s), %v; want %+v (data %s)", upTo, got, got.Data, ok, want, want.Data)
			}
		}
		if _, ok := load("cart-1", 0); ok {
			t.Error("a stream without snapshot has one")
		}

		v6 := eventstore.Snapshot{Stream: "cart-1", Version: 6, Schema: 2, Data: []byte(`{"items":6}`)}
		saveSnapshot(t, s, db, v6)
		for _, upTo := range []int64{0, 6, 7, 100} {
			expect(upTo, v6)
		}
		for _, upTo := range []int64{5, 1} {
			if snap, ok := load("cart-1", upTo); ok {
				t.Errorf("load up to %d returns the snapshot at %d", upTo, snap.Version)
			}
		}

		saveSnapshot(t, s, db, eventstore.Snapshot{Stream: "cart-1", Version: 3, Schema: 2, Data: []byte(`{"items":3}`)})
		expect(0, v6) // an older snapshot never replaces a newer one

		v9 := eventstore.Snapshot{Stream: "cart-1", Version: 9, Schema: 3, Data: []byte(`{"items":9}`)}
		saveSnapshot(t, s, db, v9)
		expect(0, v9)
		if _, ok := load("cart-1", 8); ok {
			t.Error("load up to 8 after the snapshot at 9 returns one; only the latest is kept")
		}

		if _, ok := load("cart-2", 0); ok {
			t.Error("cart-2 has the snapshot of cart-1")
		}
		boom := errors.New("rolled back")
		err := db.InTx(ctx, func(tx *sql.Tx) error {
			if err := s.SaveSnapshot(ctx, tx, eventstore.Snapshot{Stream: "cart-1", Version: 12, Schema: 3, Data: []byte(`{}`)}); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("InTx = %v", err)
		}
		expect(0, v9)
	})
}

func TestAppend_DuplicateIDFails(t *testing.T) {
	each(t, func(t *testing.T, db *storage.DB) {
		ctx := testContext(t)
		s := newStore(t, db, eventstore.Config{Table: "es_dupid"})
		first := appendEvents(t, s, db, "a", 0, event("x", `1`))

		reused := event("y", `2`)
		reused.ID = first[0].ID
		if _, err := tryAppend(ctx, db, s, "b", 0, event("y", `1`), reused); err == nil {
			t.Error("appending an id stored in another stream succeeded")
		}
		twice := event("z", `1`)
		if _, err := tryAppend(ctx, db, s, "c", 0, twice, twice); err == nil {
			t.Error("appending one id twice in a batch succeeded")
		}
		if _, err := tryAppend(ctx, db, s, "a", 1, reused); err == nil {
			t.Error("appending an id again to its own stream succeeded")
		}
		if all := readAll(t, s, db, 0, 10); !slices.Equal(ids(all), ids(first)) {
			t.Errorf("store holds %v, want only %v", ids(all), ids(first))
		}
	})
}

func TestAppend_DuplicateIDIsNotAVersionConflict(t *testing.T) {
	each(t, func(t *testing.T, db *storage.DB) {
		ctx := testContext(t)
		s := newStore(t, db, eventstore.Config{Table: "es_dupconflict"})
		first := appendEvents(t, s, db, "a", 0, event("x", `1`))
		reused := event("y", `2`)
		reused.ID = first[0].ID
		_, err := tryAppend(ctx, db, s, "b", 0, reused)
		if !errors.Is(err, eventstore.ErrDuplicateID) || errors.Is(err, eventstore.ErrConflict) {
			t.Errorf("append of a stored id to a stream at the expected version = %v, want ErrDuplicateID and not ErrConflict", err)
		}
	})
}

func TestAppend_RejectsInvalidInput(t *testing.T) {
	each(t, func(t *testing.T, db *storage.DB) {
		ctx := testContext(t)
		s := newStore(t, db, eventstore.Config{Table: "es_invalid"})
		valid := func() eventstore.NewEvent { return event("x", `{}`) }
		with := func(f func(*eventstore.NewEvent)) eventstore.NewEvent {
			e := valid()
			f(&e)
			return e
		}
		for _, c := range []struct {
			name   string
			stream string
			events []eventstore.NewEvent
		}{
			{"no stream", "", []eventstore.NewEvent{valid()}},
			{"no id", "s", []eventstore.NewEvent{with(func(e *eventstore.NewEvent) { e.ID = "" })}},
			{"no type", "s", []eventstore.NewEvent{with(func(e *eventstore.NewEvent) { e.Type = "" })}},
			{"schema 0", "s", []eventstore.NewEvent{with(func(e *eventstore.NewEvent) { e.Schema = 0 })}},
			{"schema -1", "s", []eventstore.NewEvent{with(func(e *eventstore.NewEvent) { e.Schema = -1 })}},
			{"second of a batch", "s", []eventstore.NewEvent{valid(), with(func(e *eventstore.NewEvent) { e.Schema = 0 })}},
		} {
			_, err := tryAppend(ctx, db, s, c.stream, 0, c.events...)
			if err == nil || errors.Is(err, eventstore.ErrConflict) {
				t.Errorf("%s: append = %v, want a validation error", c.name, err)
			}
		}
		if all := readAll(t, s, db, 0, 10); len(all) != 0 {
			t.Errorf("invalid appends stored %d events", len(all))
		}
	})
}

func TestAppend_InvalidEventLeavesNothingInTheTransaction(t *testing.T) {
	each(t, func(t *testing.T, db *storage.DB) {
		ctx := testContext(t)
		s := newStore(t, db, eventstore.Config{Table: "es_invalid_tx"})
		var appendErr error
		err := db.InTx(ctx, func(tx *sql.Tx) error {
			_, appendErr = s.Append(ctx, tx, "s", 0, event("x", `{}`), eventstore.NewEvent{ID: newID(), Type: "x"})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if appendErr == nil {
			t.Fatal("invalid batch appended")
		}
		if all := readAll(t, s, db, 0, 10); len(all) != 0 {
			t.Errorf("a rejected batch left %d of its events: %v", len(all), ids(all))
		}
	})
}

func TestAppend_ReturnsEventsAsReadBack(t *testing.T) {
	each(t, func(t *testing.T, db *storage.DB) {
		s := newStore(t, db, eventstore.Config{Table: "es_asstored"})
		at := time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC)
		withAt := event("x", `{"a":1}`)
		withAt.At = at
		appended := appendEvents(t, s, db, "s", 0, withAt, event("x", `{"b":2}`))
		got := read(t, s, db, "s", 0, 0)
		if len(got) != len(appended) {
			t.Fatalf("read %d events, appended %d", len(got), len(appended))
		}
		for i := range got {
			a, r := appended[i], got[i]
			if a.Position != r.Position || a.ID != r.ID || a.Version != r.Version || a.Schema != r.Schema || !bytes.Equal(a.Data, r.Data) || !a.RecordedAt.Equal(r.RecordedAt) {
				t.Errorf("event %d: append returned %+v, read returns %+v", i, a, r)
			}
		}
	})
}

func TestAppend_DataRoundTripsAnyBytes(t *testing.T) {
	each(t, func(t *testing.T, db *storage.DB) {
		s := newStore(t, db, eventstore.Config{Table: "es_bytes"})
		for name, data := range map[string][]byte{
			"json":        []byte(`{"name":"Zoë","note":"naïve – ok ✓"}`),
			"empty":       {},
			"newlines":    []byte("line 1\nline 2\r\n\ttab"),
			"quote chars": []byte(`'; DROP TABLE es_bytes; --"`),
		} {
			ne := event("x", "")
			ne.Data = data
			appendEvents(t, s, db, name, 0, ne)
			got := read(t, s, db, name, 0, 0)
			if len(got) != 1 || !bytes.Equal(got[0].Data, data) {
				t.Errorf("%s: %q reads back as %v", name, data, got)
			}
		}
	})
}

// Data is text on both engines: a binary payload is refused alike, where
// SQLite would store it and PostgreSQL would not.
func TestAppend_BinaryDataIsRefusedOnEveryEngine(t *testing.T) {
	each(t, func(t *testing.T, db *storage.DB) {
		s := newStore(t, db, eventstore.Config{Table: "es_binary"})
		for name, data := range map[string][]byte{
			"invalid UTF-8": {0x0a, 0x03, 'o', 0xff, 0xfe, 0x80},
			"NUL byte":      {'{', '}', 0x00},
		} {
			ne := event("x", "")
			ne.Data = data
			if _, err := tryAppend(testContext(t), db, s, "s", 0, ne); err == nil {
				t.Errorf("%s: appended", name)
			}
		}
		if got := read(t, s, db, "s", 0, 0); len(got) != 0 {
			t.Errorf("refused data stored: %v", got)
		}
	})
}

func TestEnsureSchema_DefaultTableIdempotentAndStoresApart(t *testing.T) {
	each(t, func(t *testing.T, db *storage.DB) {
		ctx := testContext(t)
		def := newStore(t, db, eventstore.Config{})
		odd := newStore(t, db, eventstore.Config{Table: `order-events "v2"`})
		appendEvents(t, def, db, "s", 0, event("x", `{}`))
		appendEvents(t, odd, db, "s", 0, event("y", `{}`), event("y", `{}`))
		saveSnapshot(t, def, db, eventstore.Snapshot{Stream: "s", Version: 1, Schema: 1, Data: []byte(`{}`)})

		// Again, with data in place, as a restarted replica does.
		if err := def.EnsureSchema(ctx); err != nil {
			t.Fatalf("ensure schema again: %v", err)
		}
		for table, want := range map[string]int{"events": 1, "events_snapshots": 1, `"order-events ""v2"""`: 2, `"order-events ""v2""_snapshots"`: 0} {
			var n int
			if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+table).Scan(&n); err != nil {
				t.Fatalf("count %s: %v", table, err)
			}
			if n != want {
				t.Errorf("%s holds %d rows, want %d", table, n, want)
			}
		}
		if v := version(t, def, db, "s"); v != 1 {
			t.Errorf("default store: version of s = %d, want 1", v)
		}
		if v := version(t, odd, db, "s"); v != 2 {
			t.Errorf("other store: version of s = %d, want 2", v)
		}
		if _, ok, err := odd.LoadSnapshot(ctx, db, "s", 0); err != nil || ok {
			t.Errorf("other store loads the default store's snapshot: %v, %v", ok, err)
		}
	})
}

// A Querier is what Read takes; a read-only transaction gives a consistent view.
func TestRead_InAReadTransaction(t *testing.T) {
	each(t, func(t *testing.T, db *storage.DB) {
		ctx := testContext(t)
		s := newStore(t, db, eventstore.Config{Table: "es_readtx"})
		appendEvents(t, s, db, "s", 0, event("x", `1`), event("x", `2`))
		err := db.ReadTx(ctx, func(tx *sql.Tx) error {
			if v := version(t, s, tx, "s"); v != 2 {
				t.Errorf("version in a read transaction = %d, want 2", v)
			}
			if got := read(t, s, tx, "s", 1, 0); !slices.Equal(versions(got), span(2, 2)) {
				t.Errorf("read in a read transaction = %v, want version 2", versions(got))
			}
			if got := readAll(t, s, tx, 0, 10); len(got) != 2 {
				t.Errorf("read all in a read transaction = %d events, want 2", len(got))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

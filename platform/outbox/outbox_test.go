package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/bus/bustest"
	"github.com/mercato-shop/mercato/platform/outbox"
	"github.com/mercato-shop/mercato/platform/runtime"
	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/platform/storage/storagetest"
	"github.com/mercato-shop/mercato/platform/telemetry"
)

func TestOutbox_RolledBackEventsAreNeverPublished(t *testing.T) {
	each(t, func(t *testing.T, f *fixture) {
		ctx := testContext(t)
		o := newOutbox(t, f.db, f.bus, outbox.Config{})

		boom := errors.New("boom")
		err := o.InTx(ctx, func(_ *sql.Tx, add func(...bus.Event) error) error {
			if err := add(f.event("rolled back by InTx")); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("InTx = %v, want the error of fn", err)
		}
		tx, err := f.db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := o.Add(ctx, tx, f.event("rolled back by hand")); err != nil {
			t.Fatalf("add: %v", err)
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		add(t, ctx, o, f.event("committed"))

		if err := o.Flush(ctx); err != nil {
			t.Fatalf("flush: %v", err)
		}
		if got := payloads(t, streamMsgs(t, f.bus, f.stream)); !slices.Equal(got, []string{"committed"}) {
			t.Errorf("stream holds %q, want only the committed event", got)
		}
	})
}

func TestRelay_PublishesCommittedEventsInOrderWithTheirIDs(t *testing.T) {
	each(t, func(t *testing.T, f *fixture) {
		ctx := testContext(t)
		o := newOutbox(t, f.db, f.bus, outbox.Config{Batch: 2})
		start(t, o)

		var want []string
		var ids []string
		for tx := range 3 {
			var events []bus.Event
			for i := range 3 {
				ev := f.event(fmt.Sprintf("tx%d-event%d", tx, i))
				ev.ID = uuid.NewString()
				events = append(events, ev)
				want = append(want, ev.Subject)
				ids = append(ids, ev.ID)
			}
			add(t, ctx, o, events...)
		}
		waitDrained(t, o)

		msgs := streamMsgs(t, f.bus, f.stream)
		if got := payloads(t, msgs); !slices.Equal(got, want) {
			t.Fatalf("stream holds %q, want %q", got, want)
		}
		for i, m := range msgs {
			for key, value := range map[string]string{
				jetstream.MsgIDHeader: ids[i],
				bus.HeaderID:          ids[i],
				bus.HeaderType:        f.typ(),
				bus.HeaderSource:      "outboxtest",
				bus.HeaderSubject:     want[i],
				bus.HeaderSpecVersion: "1.0",
			} {
				if got := m.Header.Get(key); got != value {
					t.Errorf("message %d: header %s = %q, want %q", i, key, got, value)
				}
			}
		}
	})
}

func TestRelay_ConsumerContinuesTheTraceOfTheWriter(t *testing.T) {
	each(t, func(t *testing.T, f *fixture) {
		ctx := testContext(t)
		rec := tracetest.NewSpanRecorder()
		tp := telemetry.NewTracerProvider("outboxtest", sdktrace.WithSpanProcessor(rec))
		b := connect(t, f.target.URL, tp)
		o := newOutbox(t, f.db, b, outbox.Config{})

		type delivery struct {
			ctx context.Context
			id  string
		}
		got := make(chan delivery, 1)
		sub, err := b.Subscribe(ctx, bus.Consumer{Stream: f.stream, Durable: bustest.Unique("d")}, bus.Handlers{
			f.typ(): func(ctx context.Context, m bus.Message, _ []byte) error {
				got <- delivery{ctx: ctx, id: m.ID}
				return nil
			},
		})
		if err != nil {
			t.Fatalf("subscribe: %v", err)
		}
		t.Cleanup(sub.Stop)

		// The writer's request has a trace and a correlation id; the relay,
		// started from a bare context, publishes on its own goroutine.
		reqCtx, reqSpan := tp.Tracer("test").Start(ctx, "request")
		correlation := telemetry.NewCorrelationID()
		add(t, telemetry.WithCorrelationID(reqCtx, correlation), o, f.event("traced"))
		reqSpan.End()
		if err := o.Start(context.Background()); err != nil {
			t.Fatal(err)
		}

		var d delivery
		select {
		case d = <-got:
		case <-ctx.Done():
			t.Fatal("event not delivered")
		}
		if tid := trace.SpanContextFromContext(d.ctx).TraceID(); tid != reqSpan.SpanContext().TraceID() {
			t.Errorf("consumer trace = %s, want the writer's %s", tid, reqSpan.SpanContext().TraceID())
		}
		if id := telemetry.CorrelationID(d.ctx); id != correlation {
			t.Errorf("consumer correlation id = %q, want the writer's %q", id, correlation)
		}
	})
}

func TestRelay_EventsCommittedBeforeACrashArePublishedOnceAfterRestart(t *testing.T) {
	each(t, func(t *testing.T, f *fixture) {
		ctx := testContext(t)
		// The first process commits and dies before its relay publishes.
		crashed := newOutbox(t, f.db, f.bus, outbox.Config{})
		var want []string
		for i := range 10 {
			want = append(want, fmt.Sprint("event", i))
			add(t, ctx, crashed, f.event(want[i]))
		}

		// The next one opens the same database with a new connection to the broker.
		restarted := newOutbox(t, storagetest.Open(t, f.engine, nil), connect(t, f.target.URL, nil), outbox.Config{Batch: 3})
		start(t, restarted)
		waitDrained(t, restarted)

		if got := payloads(t, streamMsgs(t, f.bus, f.stream)); !slices.Equal(got, want) {
			t.Errorf("stream holds %q, want %q once each, in order", got, want)
		}
	})
}

func TestRelay_EventsPublishedButNotMarkedAreDedupedByTheBroker(t *testing.T) {
	each(t, func(t *testing.T, f *fixture) {
		ctx := testContext(t)
		o := newOutbox(t, f.db, f.bus, outbox.Config{})
		var want []string
		for i := range 5 {
			want = append(want, fmt.Sprint("event", i))
			add(t, ctx, o, f.event(want[i]))
		}

		// Keep the rows as they were before the relay marked them sent...
		rows := copyRows(t, f)
		if err := o.Flush(ctx); err != nil {
			t.Fatalf("flush: %v", err)
		}
		// ...and put them back, as if the process had crashed before marking.
		for _, r := range rows {
			if _, err := f.db.ExecContext(ctx, `INSERT INTO outbox (id, subject, header, data, created_at) VALUES ($1, $2, $3, $4, $5)`,
				r.id, r.subject, r.header, r.data, r.createdAt); err != nil {
				t.Fatalf("put row back: %v", err)
			}
		}
		if n := pending(t, o); n != len(want) {
			t.Fatalf("pending = %d, want %d", n, len(want))
		}
		start(t, o)
		waitDrained(t, o)

		if got := payloads(t, streamMsgs(t, f.bus, f.stream)); !slices.Equal(got, want) {
			t.Errorf("stream holds %q, want %q once each", got, want)
		}
	})
}

type storedRow struct {
	id, subject, header string
	data                []byte
	createdAt           int64
}

func copyRows(t *testing.T, f *fixture) []storedRow {
	t.Helper()
	rs, err := f.db.QueryContext(testContext(t), `SELECT id, subject, header, data, created_at FROM outbox ORDER BY seq`)
	if err != nil {
		t.Fatalf("read rows: %v", err)
	}
	defer rs.Close()
	var rows []storedRow
	for rs.Next() {
		var r storedRow
		if err := rs.Scan(&r.id, &r.subject, &r.header, &r.data, &r.createdAt); err != nil {
			t.Fatal(err)
		}
		rows = append(rows, r)
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	return rows
}

func TestRelay_KeepsEventsWhilePublishingFailsAndSendsThemInOrderLater(t *testing.T) {
	each(t, func(t *testing.T, f *fixture) {
		ctx := testContext(t)
		logs := &logRecorder{}
		o := newOutbox(t, f.db, f.bus, outbox.Config{Batch: 2, Logger: slog.New(logs)})
		start(t, o)

		// No stream takes these subjects yet: every publish fails.
		prefix := bustest.Unique("t")
		var want []string
		for i := range 5 {
			want = append(want, fmt.Sprint("event", i))
			add(t, ctx, o, bus.Event{Type: prefix + ".thing.happened", Data: wrapperspb.String(want[i])})
		}
		eventually(t, "no warning about the failing publish", func() bool { return logs.count(slog.LevelWarn) > 0 })
		// Let it fail a few more times: it must warn once per outage.
		eventually(t, "no retry logged", func() bool { return logs.count(slog.LevelDebug) >= 2 })
		if n := pending(t, o); n != len(want) {
			t.Fatalf("pending = %d during the outage, want %d", n, len(want))
		}

		stream := bustest.Unique("LATE")
		if err := f.bus.EnsureStream(ctx, bus.Stream{Name: stream, Subjects: []string{prefix + ".>"}}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = f.bus.JetStream().DeleteStream(context.Background(), stream) })
		waitDrained(t, o)

		if got := payloads(t, streamMsgs(t, f.bus, stream)); !slices.Equal(got, want) {
			t.Errorf("stream holds %q, want %q", got, want)
		}
		if n := logs.count(slog.LevelWarn); n != 1 {
			t.Errorf("%d warnings for one outage, want 1", n)
		}
		eventually(t, "recovery not logged", func() bool { return logs.count(slog.LevelInfo) == 1 })
	})
}

func TestRelay_SurvivesABrokerRestart(t *testing.T) {
	for _, e := range storagetest.Engines(t) {
		t.Run(e.Name, func(t *testing.T) {
			ctx := testContext(t)
			dir := t.TempDir()
			srv := startNATS(t, dir, -1)
			port := srv.Addr().(*net.TCPAddr).Port
			b := connect(t, srv.ClientURL(), nil)
			// Not newStream: the server is private, and gone before cleanup could delete it.
			stream, prefix := bustest.Unique("OUTBOX"), bustest.Unique("t")
			if err := b.EnsureStream(ctx, bus.Stream{Name: stream, Subjects: []string{prefix + ".>"}}); err != nil {
				t.Fatal(err)
			}
			typ := prefix + ".thing.happened"
			logs := &logRecorder{}
			o := newOutbox(t, storagetest.Open(t, e, nil), b, outbox.Config{Logger: slog.New(logs)})
			start(t, o)

			add(t, ctx, o, bus.Event{Type: typ, Data: wrapperspb.String("before")})
			waitDrained(t, o)

			srv.Shutdown()
			srv.WaitForShutdown()
			eventually(t, "the bus still looks connected", func() bool { return b.Ready(ctx) != nil })
			want := []string{"before"}
			for i := range 5 {
				want = append(want, fmt.Sprint("during", i))
				add(t, ctx, o, bus.Event{Type: typ, Data: wrapperspb.String(want[i+1])})
			}
			eventually(t, "no warning about the broker being down", func() bool { return logs.count(slog.LevelWarn) > 0 })
			if n := pending(t, o); n != 5 {
				t.Fatalf("pending = %d with the broker down, want 5", n)
			}

			startNATS(t, dir, port) // same store, same address: the bus reconnects
			waitDrained(t, o)
			if got := payloads(t, streamMsgs(t, b, stream)); !slices.Equal(got, want) {
				t.Errorf("stream holds %q, want %q", got, want)
			}
		})
	}
}

// startNATS starts a JetStream server on port (-1: any) storing in dir, shut
// down at cleanup. bus.StartServer always picks a new port; this test needs
// the same address twice.
func startNATS(t *testing.T, dir string, port int) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(waitFor) {
		t.Fatalf("nats server not ready after %s", waitFor)
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return ns
}

func TestRelay_ReplicasOnOnePostgresDatabasePublishEachEventOnceInOrder(t *testing.T) {
	var engine storagetest.Engine
	for _, e := range storagetest.Engines(t) {
		if e.Name == "postgres" {
			engine = e
		}
	}
	if engine.DSN == "" {
		t.Skip("needs PostgreSQL: set MERCATO_TEST_POSTGRES")
	}
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		ctx := testContext(t)
		observer := connect(t, target.URL, nil)
		stream, prefix := newStream(t, observer, 0)
		typ := prefix + ".thing.happened"

		// Every publish on the wire, duplicates included: the stream would
		// hide those the broker dedupes.
		var mu sync.Mutex
		sent := map[string]int{}
		wire, err := observer.Conn().Subscribe(prefix+".>", func(m *nats.Msg) {
			mu.Lock()
			defer mu.Unlock()
			sent[m.Header.Get(bus.HeaderID)]++
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = wire.Unsubscribe() })
		if err := observer.Conn().Flush(); err != nil {
			t.Fatal(err)
		}

		// Two replicas, each with its own pool and broker connection, each
		// writing and relaying on the same table.
		const writers, perWriter = 2, 60
		replicas := make([]*outbox.Outbox, writers)
		for i := range replicas {
			replicas[i] = newOutbox(t, storagetest.Open(t, engine, nil), connect(t, target.URL, nil), outbox.Config{Batch: 7})
			start(t, replicas[i])
		}
		var wg sync.WaitGroup
		for w, o := range replicas {
			wg.Go(func() {
				for i := range perWriter {
					ev := bus.Event{Type: typ, Data: wrapperspb.String(fmt.Sprintf("%d/%03d", w, i))}
					if err := o.InTx(ctx, func(_ *sql.Tx, add func(...bus.Event) error) error { return add(ev) }); err != nil {
						t.Errorf("writer %d: %v", w, err)
						return
					}
				}
			})
		}
		wg.Wait()
		waitDrained(t, replicas[0])

		got := payloads(t, streamMsgs(t, observer, stream))
		if len(got) != writers*perWriter {
			t.Errorf("stream holds %d events, want %d", len(got), writers*perWriter)
		}
		// Each writer's events were committed one after the other: they
		// must be in that order in the stream.
		last := map[string]string{}
		for _, v := range got {
			w, _, _ := strings.Cut(v, "/")
			if v <= last[w] {
				t.Errorf("%s after %s", v, last[w])
			}
			last[w] = v
		}
		mu.Lock()
		defer mu.Unlock()
		for id, n := range sent {
			if n != 1 {
				t.Errorf("event %s sent %d times, want once", id, n)
			}
		}
	})
}

func TestInTx_WakesTheRelayWithoutWaitingForTheSweep(t *testing.T) {
	each(t, func(t *testing.T, f *fixture) {
		ctx := testContext(t)
		o := newOutbox(t, f.db, f.bus, outbox.Config{Sweep: time.Hour})
		start(t, o)
		for i := range 3 {
			add(t, ctx, o, f.event(fmt.Sprint(i)))
			// Not a timing threshold: without a wake-up it would take an hour.
			waitDrained(t, o)
		}
		if got := payloads(t, streamMsgs(t, f.bus, f.stream)); !slices.Equal(got, []string{"0", "1", "2"}) {
			t.Errorf("stream holds %q", got)
		}
	})
}

func TestOutbox_PendingCountsUntilFlushPublishes(t *testing.T) {
	each(t, func(t *testing.T, f *fixture) {
		ctx := testContext(t)
		o := newOutbox(t, f.db, f.bus, outbox.Config{Batch: 2})
		if n := pending(t, o); n != 0 {
			t.Fatalf("pending = %d on a new outbox", n)
		}
		dup := f.event("dup")
		dup.ID = uuid.NewString()
		add(t, ctx, o, f.event("a"), f.event("b"), dup)
		add(t, ctx, o, f.event("c"), f.event("d"), dup) // the same event again: added once
		if n := pending(t, o); n != 5 {
			t.Fatalf("pending = %d, want 5", n)
		}
		if err := o.Flush(ctx); err != nil {
			t.Fatalf("flush: %v", err)
		}
		if n := pending(t, o); n != 0 {
			t.Errorf("pending = %d after flush, want 0", n)
		}
		if got := payloads(t, streamMsgs(t, f.bus, f.stream)); !slices.Equal(got, []string{"a", "b", "dup", "c", "d"}) {
			t.Errorf("stream holds %q", got)
		}
	})
}

func TestOutbox_RunsAsALifecycleHook(t *testing.T) {
	each(t, func(t *testing.T, f *fixture) {
		ctx := testContext(t)
		o := newOutbox(t, f.db, f.bus, outbox.Config{Table: "events_out"})
		var lc runtime.Lifecycle
		lc.Append(o.Hook())
		if err := lc.Start(ctx); err != nil {
			t.Fatalf("start: %v", err)
		}
		if err := o.Start(ctx); err == nil {
			t.Error("a second Start succeeded")
		}
		add(t, ctx, o, f.event("x"))
		waitDrained(t, o)
		if err := lc.Stop(ctx); err != nil {
			t.Fatalf("stop: %v", err)
		}
		if err := o.Stop(ctx); err != nil {
			t.Errorf("stop of a stopped relay: %v", err)
		}

		add(t, ctx, o, f.event("y"))
		if n := pending(t, o); n != 1 {
			t.Errorf("pending = %d after stop, want 1: the stopped relay published", n)
		}
	})
}

// rows counts the outbox table's rows, published or not.
func rows(t testing.TB, db *storage.DB, table string) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(testContext(t), `SELECT COUNT(*) FROM `+table).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

func TestRelay_DeletesWhatItPublishedWithoutWaitingForTheSweep(t *testing.T) {
	each(t, func(t *testing.T, f *fixture) {
		ctx := testContext(t)
		o := newOutbox(t, f.db, f.bus, outbox.Config{Sweep: time.Hour})
		start(t, o)
		for i := range 3 {
			add(t, ctx, o, f.event(fmt.Sprint(i)))
		}
		// Not a timing threshold: a sweep would come after an hour.
		eventually(t, "published rows are still in the table", func() bool { return rows(t, f.db, "outbox") == 0 })
		if got := payloads(t, streamMsgs(t, f.bus, f.stream)); !slices.Equal(got, []string{"0", "1", "2"}) {
			t.Errorf("stream holds %q", got)
		}

		// Rows added after the deletes are read above the high-water mark.
		add(t, ctx, o, f.event("3"))
		eventually(t, "the event after the deletes was not published", func() bool {
			return len(streamMsgs(t, f.bus, f.stream)) == 4
		})
	})
}

func TestRelay_StopLeavesNothingPublishedInTheTable(t *testing.T) {
	each(t, func(t *testing.T, f *fixture) {
		ctx := testContext(t)
		o := newOutbox(t, f.db, f.bus, outbox.Config{Sweep: time.Hour})
		start(t, o)
		add(t, ctx, o, f.event("a"), f.event("b"))
		eventually(t, "events not published", func() bool { return len(streamMsgs(t, f.bus, f.stream)) == 2 })
		if err := o.Stop(ctx); err != nil {
			t.Fatalf("stop: %v", err)
		}
		if n := rows(t, f.db, "outbox"); n != 0 {
			t.Fatalf("%d published rows left after Stop; a restart would send them again", n)
		}
	})
}

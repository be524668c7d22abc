package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/bus/bustest"
	"github.com/mercato-shop/mercato/platform/outbox"
	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/platform/storage/storagetest"
)

// waitFor bounds every wait for an asynchronous outcome.
const waitFor = 20 * time.Second

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

// fixture is one database engine and one broker, with a stream of unique
// name over the subjects "<prefix>.>".
type fixture struct {
	engine storagetest.Engine
	target bustest.Target
	db     *storage.DB
	bus    *bus.Bus
	stream string
	prefix string
}

// each runs fn on every broker (bustest) and database engine (storagetest).
func each(t *testing.T, fn func(t *testing.T, f *fixture)) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		engines := storagetest.Engines(t)
		for _, e := range engines {
			t.Run(e.Name, func(t *testing.T) {
				f := &fixture{engine: e, target: target, db: storagetest.Open(t, e, nil)}
				f.bus = connect(t, target.URL, nil)
				f.stream, f.prefix = newStream(t, f.bus, 0)
				fn(t, f)
			})
		}
		if len(engines) == 1 {
			t.Run("postgres", func(t *testing.T) { t.Skip("set MERCATO_TEST_POSTGRES to run it") })
		}
	})
}

// typ is an event type, and subject, inside the fixture's stream.
func (f *fixture) typ() string { return f.prefix + ".thing.happened" }

// event returns an event of the fixture's type whose payload is value.
func (f *fixture) event(value string) bus.Event {
	return bus.Event{Type: f.typ(), Subject: value, Data: wrapperspb.String(value)}
}

// connect returns a bus closed at cleanup.
func connect(t testing.TB, url string, tp trace.TracerProvider) *bus.Bus {
	t.Helper()
	b, err := bus.Connect(testContext(t), bus.Config{URL: url, Source: "outboxtest", Tracer: tp})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(b.Close)
	return b
}

// newStream declares a stream of unique name over "<prefix>.>", deleted at
// cleanup; duplicates is its dedupe window (0: the server's default).
func newStream(t testing.TB, b *bus.Bus, duplicates time.Duration) (stream, prefix string) {
	t.Helper()
	stream, prefix = bustest.Unique("OUTBOX"), bustest.Unique("t")
	if err := b.EnsureStream(testContext(t), bus.Stream{Name: stream, Subjects: []string{prefix + ".>"}, Duplicates: duplicates}); err != nil {
		t.Fatalf("ensure stream: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if err := b.JetStream().DeleteStream(ctx, stream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Errorf("delete stream %s: %v", stream, err)
		}
	})
	return stream, prefix
}

// newOutbox returns an outbox with its table created, stopped at cleanup.
func newOutbox(t testing.TB, db *storage.DB, b *bus.Bus, cfg outbox.Config) *outbox.Outbox {
	t.Helper()
	o := outbox.New(db, b, cfg)
	if err := o.EnsureSchema(testContext(t)); err != nil {
		t.Fatalf("ensure schema: %v", err)
	}
	t.Cleanup(func() {
		if err := o.Stop(context.Background()); err != nil {
			t.Errorf("stop relay: %v", err)
		}
	})
	return o
}

func start(t testing.TB, o *outbox.Outbox) {
	t.Helper()
	if err := o.Start(t.Context()); err != nil {
		t.Fatalf("start relay: %v", err)
	}
}

// add commits events in one transaction through o.
func add(t testing.TB, ctx context.Context, o *outbox.Outbox, events ...bus.Event) {
	t.Helper()
	err := o.InTx(ctx, func(_ *sql.Tx, add func(...bus.Event) error) error { return add(events...) })
	if err != nil {
		t.Fatalf("add events: %v", err)
	}
}

// eventually polls cond every few milliseconds until it holds, failing the
// test after waitFor with what describe says.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", waitFor, what)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
}

func pending(t testing.TB, o *outbox.Outbox) int {
	t.Helper()
	n, err := o.Pending(testContext(t))
	if err != nil {
		t.Fatalf("pending: %v", err)
	}
	return n
}

// waitDrained waits until o has nothing pending.
func waitDrained(t testing.TB, o *outbox.Outbox) {
	t.Helper()
	eventually(t, "events still pending in the outbox", func() bool { return pending(t, o) == 0 })
}

// streamMsgs returns the messages stored in stream, in stream order.
func streamMsgs(t testing.TB, b *bus.Bus, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := testContext(t)
	s, err := b.JetStream().Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	st := s.CachedInfo().State
	var msgs []*jetstream.RawStreamMsg
	for seq := st.FirstSeq; st.Msgs > 0 && seq <= st.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get message %d of %s: %v", seq, stream, err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// payloads decodes the string payloads of msgs.
func payloads(t testing.TB, msgs []*jetstream.RawStreamMsg) []string {
	t.Helper()
	out := make([]string, len(msgs))
	for i, m := range msgs {
		var v wrapperspb.StringValue
		if err := proto.Unmarshal(m.Data, &v); err != nil {
			t.Fatalf("decode message %d: %v", m.Sequence, err)
		}
		out[i] = v.GetValue()
	}
	return out
}

// logRecorder is a slog handler that keeps the records it handles.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logRecorder) WithGroup(string) slog.Handler            { return h }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}

// count returns how many records of level were logged.
func (h *logRecorder) count(level slog.Level) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.records {
		if r.Level == level {
			n++
		}
	}
	return n
}

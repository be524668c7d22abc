// Package outboxtest helps a service test what its stores write to the
// outbox: a real embedded broker, an outbox whose relay is not started
// (events stay pending where a test can count them), and a reader of what
// reached a stream.
package outboxtest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/outbox"
	"github.com/mercato-shop/mercato/platform/storage"
)

// WaitFor bounds every wait for an asynchronous outcome.
const WaitFor = 20 * time.Second

// StartBus starts an embedded NATS server for the test, declares streams
// on it, and returns its URL.
func StartBus(t testing.TB, streams ...bus.Stream) string {
	t.Helper()
	srv, err := bus.StartServer(context.Background(), bus.ServerConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("start nats: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	b := Connect(t, srv.ClientURL(), "outboxtest")
	for _, s := range streams {
		if err := b.EnsureStream(context.Background(), s); err != nil {
			t.Fatalf("ensure stream %s: %v", s.Name, err)
		}
	}
	return srv.ClientURL()
}

// Connect returns a bus connection closed at cleanup.
func Connect(t testing.TB, url, source string) *bus.Bus {
	t.Helper()
	b, err := bus.Connect(context.Background(), bus.Config{URL: url, Source: source})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(b.Close)
	return b
}

// New returns the outbox of db, publishing on the server at url as source;
// its relay is not started, and is stopped at cleanup if a test starts it.
func New(t testing.TB, db *storage.DB, url, source string, cfg outbox.Config) *outbox.Outbox {
	t.Helper()
	o := outbox.New(db, Connect(t, url, source), cfg)
	if err := o.EnsureSchema(context.Background()); err != nil {
		t.Fatalf("outbox schema: %v", err)
	}
	t.Cleanup(func() {
		if err := o.Stop(context.Background()); err != nil {
			t.Errorf("stop relay: %v", err)
		}
	})
	return o
}

// Pending counts o's unpublished events.
func Pending(t testing.TB, o *outbox.Outbox) int {
	t.Helper()
	n, err := o.Pending(context.Background())
	if err != nil {
		t.Fatalf("pending: %v", err)
	}
	return n
}

// Eventually polls cond until it holds, failing the test after WaitFor.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(WaitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", WaitFor, what)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
}

// Stored returns "<subject> <ce-subject>" of every message in stream, in
// stream order.
func Stored(t testing.TB, b *bus.Bus, stream string) []string {
	t.Helper()
	ctx := context.Background()
	s, err := b.JetStream().Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	st := s.CachedInfo().State
	var out []string
	for seq := st.FirstSeq; st.Msgs > 0 && seq <= st.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("get message %d: %v", seq, err)
		}
		out = append(out, m.Subject+" "+m.Header.Get(bus.HeaderSubject))
	}
	return out
}

package bus_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/bus/bustest"
)

func TestServer_RestartOnSameStoreKeepsMessages(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	stream, prefix := bustest.Unique("S"), bustest.Unique("t")
	typ := prefix + ".thing.happened"

	srv, err := bus.StartServer(ctx, bus.ServerConfig{StoreDir: dir})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	b, err := bus.Connect(ctx, bus.Config{URL: srv.ClientURL(), Source: "bustest"})
	if err != nil {
		srv.Shutdown()
		t.Fatalf("connect: %v", err)
	}
	if err := b.Ready(ctx); err != nil {
		t.Errorf("ready while connected: %v", err)
	}
	if err := b.EnsureStream(ctx, bus.Stream{Name: stream, Subjects: []string{prefix + ".>"}}); err != nil {
		t.Fatalf("ensure stream: %v", err)
	}
	for _, v := range []string{"a", "b"} {
		publish(t, ctx, b, bus.Event{Type: typ, Data: wrapperspb.String(v)})
	}
	srv.Shutdown()
	waitNotReady(t, b)
	b.Close()

	srv, err = bus.StartServer(ctx, bus.ServerConfig{StoreDir: dir})
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	b = connect(t, bustest.Target{Name: "embedded", URL: srv.ClientURL()}, nil)
	s, err := b.JetStream().Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream after restart: %v", err)
	}
	if n := s.CachedInfo().State.Msgs; n != 2 {
		t.Errorf("stream holds %d messages after restart, want 2", n)
	}
	raw, err := s.GetMsg(ctx, 2)
	if err != nil {
		t.Fatalf("get message 2: %v", err)
	}
	if got := raw.Header.Get(bus.HeaderType); got != typ {
		t.Errorf("message 2 ce-type = %q, want %q", got, typ)
	}
}

// waitNotReady polls until Ready reports the lost connection.
func waitNotReady(t *testing.T, b *bus.Bus) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for b.Ready(t.Context()) == nil {
		if time.Now().After(deadline) {
			t.Fatal("Ready still nil after the server shut down")
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
}

package node

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/storage"
)

func readyz(t *testing.T, n *Node) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get("http://" + n.Addr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A node starts although a stream it consumes is not declared yet; it is
// not ready until it consumes; then it handles, and on stop it leaves
// discovery and closes.
func TestNode_ConsumesAStreamDeclaredAfterItStarted(t *testing.T) {
	ctx := context.Background()
	srv, err := bus.StartServer(ctx, bus.ServerConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)

	n := New(Config{Service: "thing", DSN: storage.SQLiteDSN(t.TempDir(), "thing"), BusURL: srv.ClientURL()})
	got := make(chan string, 1)
	err = n.Start(ctx, func(context.Context) error {
		n.Consume(bus.Consumer{Stream: "LATER", Durable: "thing"}, bus.Handlers{
			"later.happened": bus.On(func(_ context.Context, _ bus.Message, v *wrapperspb.StringValue) error {
				got <- v.GetValue()
				return nil
			}),
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = n.Stop(ctx)
		}
	})
	if n.Outbox == nil || n.Inbox == nil {
		t.Fatal("a node with a database has an outbox and an inbox")
	}
	if code, body := readyz(t, n); code != http.StatusServiceUnavailable || body["checks"].(map[string]any)["consumer LATER/thing"] != "waiting for stream LATER" {
		t.Fatalf("readyz while waiting: %d %v", code, body)
	}

	other, err := bus.Connect(ctx, bus.Config{URL: srv.ClientURL(), Source: "other"})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.EnsureStream(ctx, bus.Stream{Name: "LATER", Subjects: []string{"later.>"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "never ready", func() bool { code, _ := readyz(t, n); return code == http.StatusOK })
	if err := other.Publish(ctx, bus.Event{Type: "later.happened", Data: wrapperspb.String("hello")}); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-got:
		if v != "hello" {
			t.Fatalf("handled %q", v)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("not handled")
	}
	if ins := n.Registry.Instances("thing"); len(ins) != 1 || ins[0].Addr != n.Addr() {
		t.Fatalf("registered as %+v", ins)
	}

	addr := n.Addr()
	if err := n.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	stopped = true
	if _, err := http.Get("http://" + addr + "/healthz"); err == nil {
		t.Fatal("still listening after stop")
	}
}

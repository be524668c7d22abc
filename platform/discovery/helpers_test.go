package discovery

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// testTTL is short so that expiry tests finish quickly; 1s is the minimum.
const testTTL = time.Second

// forEachServer runs fn against an embedded NATS server and against the
// external one named by MERCATO_TEST_NATS.
func forEachServer(t *testing.T, fn func(t *testing.T, js jetstream.JetStream)) {
	t.Helper()
	t.Run("embedded", func(t *testing.T) {
		fn(t, connect(t, startServer(t, t.TempDir()).ClientURL()))
	})
	t.Run("external", func(t *testing.T) {
		fn(t, connect(t, externalURL(t)))
	})
}

// startServer starts an embedded NATS server with JetStream storing in dir,
// shut down at the end of the test.
func startServer(t *testing.T, dir string) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  dir,
		NoLog:     true,
		NoSigs:    true,
	})
	if err != nil {
		t.Fatalf("new nats server: %v", err)
	}
	s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("embedded nats server not ready")
	}
	return s
}

func externalURL(t *testing.T) string {
	t.Helper()
	url := os.Getenv("MERCATO_TEST_NATS")
	if url == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("MERCATO_TEST_NATS is not set; CI must provide the external NATS server")
		}
		t.Skip("MERCATO_TEST_NATS is not set; skipping the external NATS server")
	}
	return url
}

func connect(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connect to nats at %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return js
}

// testConfig returns a Config on a bucket of its own, deleted at the end of
// the test, so tests can share an external server.
func testConfig(t *testing.T, js jetstream.JetStream) Config {
	t.Helper()
	cfg := Config{Bucket: "discovery_test_" + uuid.NewString(), TTL: testTTL}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := js.DeleteKeyValue(ctx, cfg.Bucket); err != nil {
			t.Errorf("delete bucket %s: %v", cfg.Bucket, err)
		}
	})
	return cfg
}

// newRegistry opens a Registry closed at the end of the test.
func newRegistry(t *testing.T, js jetstream.JetStream, cfg Config) *Registry {
	t.Helper()
	r, err := NewRegistry(t.Context(), js, cfg)
	if err != nil {
		t.Fatalf("new registry: %v", err)
	}
	t.Cleanup(r.Close)
	return r
}

// register registers inst through r for the rest of the test.
func register(t *testing.T, r *Registry, inst Instance) Instance {
	t.Helper()
	if _, err := r.Register(t.Context(), inst); err != nil {
		t.Fatalf("register %s: %v", inst.Service, err)
	}
	return inst
}

// eventually polls cond until it returns "" or the deadline passes, then
// fails with cond's last complaint.
func eventually(t *testing.T, timeout time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ids returns the IDs of list, in order.
func ids(list []Instance) []string {
	out := make([]string, len(list))
	for i, inst := range list {
		out[i] = inst.ID
	}
	return out
}

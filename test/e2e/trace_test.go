package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"

	"github.com/mercato-shop/mercato/shop"
)

// lockedBuffer collects the log output of every service.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("a log line is not JSON: %q", sc.Text())
		}
		out = append(out, rec)
	}
	return out
}

// One trace covers the POST and every saga step, across HTTP, RPC and the
// broker; every service touched logs under the request's correlation id.
func TestShop_OneTraceAndOneCorrelationIDPerOrder(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	logs := &lockedBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := shop.Start(ctx, shop.Config{
		Addr: "127.0.0.1:0", DataDir: t.TempDir(), AdminPassword: "admin password",
		LogOutput: logs, LogLevel: slog.LevelDebug, Spans: spans, ShipAfter: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopShop(t, s) })
	c := client{t: t, base: "http://" + s.GatewayAddr()}
	ann := c.signUp("Ann")
	mug := c.catalog()["MUG-001"]

	const (
		traceID     = "4bf92f3577b34da6a3ce929d0e0e4736"
		correlation = "e2e-trace-1"
	)
	_, o := c.placeOrder(ann, mug.ID, 1, "tok_ok",
		"traceparent", "00-"+traceID+"-00f067aa0ba902b7-01", "X-Correlation-ID", correlation)
	if got := c.settle(ann, o.ID); got.Status != "CONFIRMED" {
		t.Fatalf("order %+v", got)
	}

	// Every hop of the saga, in the client's trace.
	want := []string{
		"POST /api/orders",                           // gateway and order, HTTP
		"inventory.v1.InventoryService/ListProducts", // order -> inventory, RPC
		"process inventory.cmd.reserve",              // inventory
		"process inventory.reserved",                 // order
		"process payment.cmd.charge",                 // payment
		"process payment.completed",                  // order
	}
	services := map[string]bool{}
	deadline := time.Now().Add(10 * time.Second)
	for {
		names := map[string]bool{}
		for _, sp := range spans.Ended() {
			if sp.SpanContext().TraceID().String() != traceID {
				continue
			}
			names[sp.Name()] = true
			for _, kv := range sp.Resource().Attributes() {
				if kv.Key == semconv.ServiceNameKey {
					services[kv.Value.AsString()] = true
				}
			}
		}
		missing := ""
		for _, n := range want {
			if !names[n] {
				missing = n
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no span %q in the order's trace; spans: %v", missing, names)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, svc := range []string{"gateway", "order", "inventory", "payment"} {
		if !services[svc] {
			t.Errorf("no span of %s in the order's trace (services: %v)", svc, services)
		}
	}

	// Every service touched logged under the correlation id, in the same trace.
	logged := map[string]bool{}
	for _, rec := range logs.records(t) {
		if rec["correlation_id"] != correlation {
			continue
		}
		if rec["trace_id"] != traceID {
			t.Errorf("a record with the correlation id is in trace %v: %v", rec["trace_id"], rec)
		}
		svc, _ := rec["service"].(string)
		logged[svc] = true
	}
	for _, svc := range []string{"gateway", "order", "inventory", "payment"} {
		if !logged[svc] {
			t.Errorf("%s logged nothing under the correlation id (logged: %v)", svc, logged)
		}
	}
}

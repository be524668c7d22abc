// Package messaging measures the reliable-messaging path against the bare
// broker in one run: events written through the transactional outbox
// (SQLite), relayed to JetStream and handled by a durable consumer, versus
// the same events published straight to JetStream. See bench/README.md.
package messaging

import (
	"context"
	"database/sql"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/outbox"
	"github.com/mercato-shop/mercato/platform/storage"
)

// receiver records when each event arrives at the consumer.
type receiver struct {
	mu        sync.Mutex
	latencies []time.Duration
	done      chan struct{}
	want      int
}

func (r *receiver) handle(_ context.Context, m bus.Message, _ []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.latencies = append(r.latencies, time.Since(m.Time))
	if len(r.latencies) == r.want {
		close(r.done)
	}
	return nil
}

func setup(b *testing.B, name string) (*bus.Bus, *receiver) {
	b.Helper()
	ctx := context.Background()
	srv, err := bus.StartServer(ctx, bus.ServerConfig{StoreDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.Shutdown)
	bs, err := bus.Connect(ctx, bus.Config{URL: srv.ClientURL(), Source: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(bs.Close)
	if err := bs.EnsureStream(ctx, bus.Stream{Name: "BENCH", Subjects: []string{"bench.>"}}); err != nil {
		b.Fatal(err)
	}
	r := &receiver{done: make(chan struct{}), want: b.N}
	sub, err := bs.Subscribe(ctx, bus.Consumer{Stream: "BENCH", Durable: name}, bus.Handlers{"bench.happened": r.handle})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(sub.Stop)
	return bs, r
}

func report(b *testing.B, r *receiver, start time.Time) {
	b.Helper()
	select {
	case <-r.done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("consumer got %d of %d events", len(r.latencies), r.want)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	r.mu.Lock()
	defer r.mu.Unlock()
	slices.Sort(r.latencies)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(r.latencies[len(r.latencies)*99/100].Microseconds())/1000, "p99-ms")
}

var payload = wrapperspb.String(string(make([]byte, 200)))

// pacedRate is the rate of the latency benchmarks: a load both paths
// sustain, so the latency is the path's and not a backlog's.
const pacedRate = 2000

// paced runs send b.N times at pacedRate.
func paced(b *testing.B, send func() error) {
	b.Helper()
	t := time.NewTicker(time.Second / pacedRate)
	defer t.Stop()
	for range b.N {
		<-t.C
		if err := send(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRawPublish: events published straight to JetStream, each waiting
// for the broker's ack, and handled by a durable consumer.
func BenchmarkRawPublish(b *testing.B) {
	bs, r := setup(b, "raw")
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if err := bs.Publish(ctx, bus.Event{Type: "bench.happened", Data: payload}); err != nil {
			b.Fatal(err)
		}
	}
	report(b, r, start)
}

// BenchmarkRawPublishPaced: as BenchmarkRawPublish, at pacedRate.
func BenchmarkRawPublishPaced(b *testing.B) {
	bs, r := setup(b, "raw-paced")
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	paced(b, func() error { return bs.Publish(ctx, bus.Event{Type: "bench.happened", Data: payload}) })
	report(b, r, start)
}

// BenchmarkOutboxPaced: as BenchmarkOutbox, at pacedRate.
func BenchmarkOutboxPaced(b *testing.B) {
	bs, r := setup(b, "outbox-paced")
	ob := newOutbox(b, bs)
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	paced(b, func() error {
		return ob.InTx(ctx, func(_ *sql.Tx, add func(...bus.Event) error) error {
			return add(bus.Event{Type: "bench.happened", Data: payload})
		})
	})
	report(b, r, start)
}

func newOutbox(b *testing.B, bs *bus.Bus) *outbox.Outbox {
	b.Helper()
	ctx := context.Background()
	db, err := storage.Open(ctx, storage.SQLiteDSN(b.TempDir(), "bench"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	ob := outbox.New(db, bs, outbox.Config{})
	if err := ob.EnsureSchema(ctx); err != nil {
		b.Fatal(err)
	}
	if err := ob.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ob.Stop(context.Background()) })
	return ob
}

// BenchmarkOutbox: each event written in a transaction of its own through
// the outbox into SQLite, relayed, and handled by a durable consumer.
func BenchmarkOutbox(b *testing.B) {
	bs, r := setup(b, "outbox")
	ob := newOutbox(b, bs)
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		err := ob.InTx(ctx, func(_ *sql.Tx, add func(...bus.Event) error) error {
			return add(bus.Event{Type: "bench.happened", Data: payload})
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	report(b, r, start)
}

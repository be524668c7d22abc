package outbox_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/outbox"
	"github.com/mercato-shop/mercato/platform/storage/storagetest"
)

// benchPayload is the size of every event's payload in the benchmarks.
const benchPayload = 256

// benchBus returns a bus on a fresh embedded server and the type of events
// that its stream takes.
func benchBus(b *testing.B) (*bus.Bus, string) {
	b.Helper()
	srv, err := bus.StartServer(testContext(b), bus.ServerConfig{StoreDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.Shutdown)
	bb := connect(b, srv.ClientURL(), nil)
	_, prefix := newStream(b, bb, 0)
	return bb, prefix + ".thing.happened"
}

func benchEvent(typ string) bus.Event {
	return bus.Event{Type: typ, Subject: "bench", Data: wrapperspb.Bytes(make([]byte, benchPayload))}
}

// BenchmarkRawPublish is the reference: events published one after the
// other, each waiting for its ack, as bus.Publish does.
func BenchmarkRawPublish(b *testing.B) {
	bb, typ := benchBus(b)
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		if err := bb.Publish(ctx, benchEvent(typ)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkRelay measures events/s from the outbox to JetStream (stored and
// acked): "write" commits each event in its own transaction while the relay
// runs, as a service does; "drain" lets the relay publish events committed
// beforehand, as after an outage.
func BenchmarkRelay(b *testing.B) {
	for _, e := range storagetest.Engines(b) {
		b.Run(e.Name+"/write", func(b *testing.B) {
			bb, typ := benchBus(b)
			o := newOutbox(b, storagetest.Open(b, e, nil), bb, outbox.Config{})
			start(b, o)
			ctx := context.Background()
			b.ResetTimer()
			for range b.N {
				add(b, ctx, o, benchEvent(typ))
			}
			waitEmpty(b, o)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
		b.Run(e.Name+"/drain", func(b *testing.B) {
			bb, typ := benchBus(b)
			o := newOutbox(b, storagetest.Open(b, e, nil), bb, outbox.Config{})
			ctx := context.Background()
			for range b.N {
				add(b, ctx, o, benchEvent(typ))
			}
			b.ResetTimer()
			start(b, o)
			waitEmpty(b, o)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// waitEmpty polls until the outbox is drained, often enough not to skew the
// measure and rarely enough not to load the database.
func waitEmpty(b *testing.B, o *outbox.Outbox) {
	b.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for pending(b, o) > 0 {
		if time.Now().After(deadline) {
			b.Fatal("outbox not drained")
		}
		time.Sleep(time.Millisecond) // poll interval
	}
}

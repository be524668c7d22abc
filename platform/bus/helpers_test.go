package bus_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/bus/bustest"
)

// waitFor bounds every wait for an asynchronous outcome.
const waitFor = 15 * time.Second

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

// connect returns a bus closed at cleanup.
func connect(t *testing.T, target bustest.Target, tp trace.TracerProvider) *bus.Bus {
	t.Helper()
	b, err := bus.Connect(testContext(t), bus.Config{URL: target.URL, Source: "bustest", Tracer: tp})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(b.Close)
	return b
}

// newStream declares a stream of unique name over "<prefix>.>" and deletes it
// at cleanup; it returns the stream name and the subject prefix.
func newStream(t *testing.T, b *bus.Bus, workQueue bool) (stream, prefix string) {
	t.Helper()
	stream, prefix = bustest.Unique("S"), bustest.Unique("t")
	if err := b.EnsureStream(testContext(t), bus.Stream{Name: stream, Subjects: []string{prefix + ".>"}, WorkQueue: workQueue}); err != nil {
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

// subscribe starts a subscription stopped at cleanup.
func subscribe(t *testing.T, b *bus.Bus, c bus.Consumer, hs bus.Handlers) *bus.Subscription {
	t.Helper()
	sub, err := b.Subscribe(testContext(t), c, hs)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	t.Cleanup(sub.Stop)
	return sub
}

func publish(t *testing.T, ctx context.Context, b *bus.Bus, ev bus.Event) {
	t.Helper()
	if err := b.Publish(ctx, ev); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

// receive returns the next value sent on ch, failing after waitFor.
func receive[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitFor):
		var zero T
		t.Fatalf("nothing received after %s", waitFor)
		return zero
	}
}

// waitIdle polls until the consumer has delivered everything and every
// delivery is acked or terminated, so no handler is left to run.
func waitIdle(t *testing.T, b *bus.Bus, stream, durable string) {
	t.Helper()
	ctx := testContext(t)
	st, err := b.JetStream().Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	// Everything published so far must be behind the ack floor: the
	// pending counts alone can read zero on a consumer that has not yet
	// counted the last publishes.
	last := st.CachedInfo().State.LastSeq
	for {
		c, err := b.JetStream().Consumer(ctx, stream, durable)
		if err != nil {
			t.Fatalf("consumer %s: %v", durable, err)
		}
		info := c.CachedInfo()
		if info.NumPending == 0 && info.NumAckPending == 0 && info.NumRedelivered == 0 && info.AckFloor.Stream >= last {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("consumer %s not idle: pending %d, ack pending %d, redelivered %d, ack floor %d of %d",
				durable, info.NumPending, info.NumAckPending, info.NumRedelivered, info.AckFloor.Stream, last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

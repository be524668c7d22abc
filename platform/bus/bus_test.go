package bus_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/bus/bustest"
	"github.com/mercato-shop/mercato/platform/telemetry"
)

type delivery struct {
	ctx  context.Context
	msg  bus.Message
	data *wrapperspb.StringValue
}

// collect is a typed handler that sends each delivery on the returned channel.
func collect() (bus.Handler, <-chan delivery) {
	ch := make(chan delivery, 100)
	return bus.On(func(ctx context.Context, m bus.Message, ev *wrapperspb.StringValue) error {
		ch <- delivery{ctx: ctx, msg: m, data: ev}
		return nil
	}), ch
}

func TestPublish_ConsumerReceivesHeadersAndPayload(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		ctx := testContext(t)
		b := connect(t, target, nil)
		stream, prefix := newStream(t, b, false)
		typ := prefix + ".thing.happened"
		h, got := collect()
		subscribe(t, b, bus.Consumer{Stream: stream, Durable: bustest.Unique("d")}, bus.Handlers{typ: h})

		at := time.Date(2030, 1, 2, 3, 4, 5, 6000, time.FixedZone("CET", 3600))
		ev := bus.Event{ID: uuid.NewString(), Type: typ, Subject: "thing-1", Time: at, Data: wrapperspb.String("hello")}
		publish(t, ctx, b, ev)

		d := receive(t, got)
		m := d.msg
		if m.ID != ev.ID || m.Type != typ || m.Source != "bustest" || m.Subject != "thing-1" || m.Delivered != 1 {
			t.Errorf("message = %+v, want id %s, type %s, source bustest, subject thing-1, delivered 1", m, ev.ID, typ)
		}
		if !m.Time.Equal(at) {
			t.Errorf("time = %v, want %v", m.Time, at)
		}
		if !proto.Equal(d.data, ev.Data) {
			t.Errorf("payload = %v, want %v", d.data, ev.Data)
		}
		for key, want := range map[string]string{
			"ce-specversion":            "1.0",
			"ce-time":                   "2030-01-02T02:04:05.000006Z",
			"content-type":              "application/protobuf",
			jetstream.MsgIDHeader:       ev.ID,
			telemetry.CorrelationHeader: "",
		} {
			if got := m.Header.Get(key); got != want {
				t.Errorf("header %s = %q, want %q", key, got, want)
			}
		}
	})
}

func TestPublish_DefaultsIDAndTime(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		ctx := testContext(t)
		b := connect(t, target, nil)
		stream, prefix := newStream(t, b, false)
		typ := prefix + ".thing.happened"
		h, got := collect()
		subscribe(t, b, bus.Consumer{Stream: stream, Durable: bustest.Unique("d")}, bus.Handlers{typ: h})

		before := time.Now()
		publish(t, ctx, b, bus.Event{Type: typ, Data: wrapperspb.String("x")})
		after := time.Now()

		m := receive(t, got).msg
		if id, err := uuid.Parse(m.ID); err != nil || id.Version() != 7 {
			t.Errorf("id = %q, want a UUIDv7 (parse error %v)", m.ID, err)
		}
		if m.Time.Before(before.Truncate(time.Microsecond)) || m.Time.After(after) || m.Time.Location() != time.UTC {
			t.Errorf("time = %v, want in UTC between %v and %v", m.Time, before, after)
		}
	})
}

func TestSubscribe_HandlerContinuesPublisherTrace(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		ctx := testContext(t)
		rec := tracetest.NewSpanRecorder()
		tp := telemetry.NewTracerProvider("bustest", sdktrace.WithSpanProcessor(rec))
		b := connect(t, target, tp)
		stream, prefix := newStream(t, b, false)
		typ := prefix + ".thing.happened"
		h, got := collect()
		subscribe(t, b, bus.Consumer{Stream: stream, Durable: bustest.Unique("d")}, bus.Handlers{typ: h})

		publish(t, ctx, b, bus.Event{Type: typ, Data: wrapperspb.String("x")})
		handlerSpan := trace.SpanContextFromContext(receive(t, got).ctx)

		producer, consumer := findSpan(t, rec, "publish "+typ), findSpan(t, rec, "process "+typ)
		if producer.SpanKind() != trace.SpanKindProducer || consumer.SpanKind() != trace.SpanKindConsumer {
			t.Errorf("span kinds = %v, %v, want producer, consumer", producer.SpanKind(), consumer.SpanKind())
		}
		if consumer.Parent().SpanID() != producer.SpanContext().SpanID() {
			t.Errorf("consumer span parent = %s, want producer span %s", consumer.Parent().SpanID(), producer.SpanContext().SpanID())
		}
		if handlerSpan.TraceID() != producer.SpanContext().TraceID() || handlerSpan.SpanID() != consumer.SpanContext().SpanID() {
			t.Errorf("handler span = %s/%s, want trace %s, span %s", handlerSpan.TraceID(), handlerSpan.SpanID(),
				producer.SpanContext().TraceID(), consumer.SpanContext().SpanID())
		}
	})
}

// findSpan polls rec for the ended span called name.
func findSpan(t *testing.T, rec *tracetest.SpanRecorder, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for time.Now().Before(deadline) {
		for _, s := range rec.Ended() {
			if s.Name() == name {
				return s
			}
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	t.Fatalf("no ended span %q", name)
	return nil
}

func TestSubscribe_HandlerGetsCorrelationID(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		ctx := testContext(t)
		b := connect(t, target, nil)
		stream, prefix := newStream(t, b, false)
		typ := prefix + ".thing.happened"
		h, got := collect()
		subscribe(t, b, bus.Consumer{Stream: stream, Durable: bustest.Unique("d")}, bus.Handlers{typ: h})

		id := telemetry.NewCorrelationID()
		publish(t, telemetry.WithCorrelationID(ctx, id), b, bus.Event{Type: typ, Data: wrapperspb.String("x")})

		d := receive(t, got)
		if got := telemetry.CorrelationID(d.ctx); got != id {
			t.Errorf("handler correlation id = %q, want %q", got, id)
		}
		if got := d.msg.Header.Get(telemetry.CorrelationHeader); got != id {
			t.Errorf("header %s = %q, want %q", telemetry.CorrelationHeader, got, id)
		}
	})
}

func TestSubscribe_FailedHandlerIsRetried(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		ctx := testContext(t)
		b := connect(t, target, nil)
		stream, prefix := newStream(t, b, false)
		typ := prefix + ".thing.happened"
		durable := bustest.Unique("d")
		attempts := make(chan uint64, 10)
		subscribe(t, b, bus.Consumer{Stream: stream, Durable: durable, Backoff: []time.Duration{10 * time.Millisecond}},
			bus.Handlers{typ: func(_ context.Context, m bus.Message, _ []byte) error {
				attempts <- m.Delivered
				if m.Delivered == 1 {
					return errors.New("transient")
				}
				return nil
			}})

		publish(t, ctx, b, bus.Event{Type: typ, Data: wrapperspb.String("x")})

		if first, second := receive(t, attempts), receive(t, attempts); first != 1 || second != 2 {
			t.Errorf("deliveries = %d, %d, want 1, 2", first, second)
		}
		waitIdle(t, b, stream, durable)
		if len(attempts) != 0 {
			t.Errorf("delivered again after success: attempt %d", <-attempts)
		}
	})
}

func TestSubscribe_UnhandleableMessagesAreTerminated(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		ctx := testContext(t)
		b := connect(t, target, nil)
		stream, prefix := newStream(t, b, false)
		typ := prefix + ".thing.happened"
		durable := bustest.Unique("d")

		// The broker announces each terminated message with an advisory.
		terminated, err := b.Conn().SubscribeSync(fmt.Sprintf("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.%s.%s", stream, durable))
		if err != nil {
			t.Fatalf("subscribe to advisories: %v", err)
		}
		t.Cleanup(func() { _ = terminated.Unsubscribe() })

		var calls atomic.Int32
		h, got := collect()
		subscribe(t, b, bus.Consumer{Stream: stream, Durable: durable}, bus.Handlers{
			typ: func(ctx context.Context, m bus.Message, data []byte) error {
				calls.Add(1)
				return h(ctx, m, data)
			},
			prefix + ".thing.rejected": func(context.Context, bus.Message, []byte) error {
				return fmt.Errorf("invariant broken: %w", bus.ErrPoison)
			},
		})

		raw := func(subject string, header nats.Header, data []byte) {
			if _, err := b.JetStream().PublishMsg(ctx, &nats.Msg{Subject: subject, Header: header, Data: data}); err != nil {
				t.Fatalf("publish raw: %v", err)
			}
		}
		raw(typ, nats.Header{bus.HeaderType: {typ}}, []byte{0xff})                                  // undecodable
		raw(prefix+".thing.untyped", nats.Header{}, []byte{})                                       // no ce-type
		raw(prefix+".thing.unknown", nats.Header{bus.HeaderType: {prefix + ".thing.unknown"}}, nil) // no handler
		publish(t, ctx, b, bus.Event{Type: prefix + ".thing.rejected", Data: wrapperspb.String("x")})
		publish(t, ctx, b, bus.Event{Type: typ, Data: wrapperspb.String("good")})

		if d := receive(t, got); d.data.GetValue() != "good" {
			t.Errorf("handled %q, want the good message", d.data.GetValue())
		}
		for i := range 4 {
			if _, err := terminated.NextMsg(waitFor); err != nil {
				t.Fatalf("terminated advisory %d of 4: %v", i+1, err)
			}
		}
		waitIdle(t, b, stream, durable)
		if n := calls.Load(); n != 2 {
			t.Errorf("handler calls = %d, want 2 (poison once, good once)", n)
		}
	})
}

func TestPublish_SameIDIsDeliveredOnce(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		ctx := testContext(t)
		b := connect(t, target, nil)
		stream, prefix := newStream(t, b, false)
		typ := prefix + ".thing.happened"
		durable := bustest.Unique("d")
		h, got := collect()
		subscribe(t, b, bus.Consumer{Stream: stream, Durable: durable}, bus.Handlers{typ: h})

		ev := bus.Event{ID: uuid.NewString(), Type: typ, Data: wrapperspb.String("x")}
		publish(t, ctx, b, ev)
		publish(t, ctx, b, ev)

		receive(t, got)
		waitIdle(t, b, stream, durable)
		if n := len(got); n != 0 {
			t.Errorf("%d extra deliveries of a duplicate", n)
		}
	})
}

func TestSubscribe_WorkQueueDeliversEachMessageOnceAcrossSubscribers(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		ctx := testContext(t)
		b := connect(t, target, nil)
		stream, prefix := newStream(t, b, true)
		typ := prefix + ".cmd.do"
		durable := bustest.Unique("d")

		var mu sync.Mutex
		seen := map[string]int{}
		handler := func(_ context.Context, m bus.Message, _ []byte) error {
			mu.Lock()
			defer mu.Unlock()
			seen[m.ID]++
			return nil
		}
		c := bus.Consumer{Stream: stream, Durable: durable}
		subscribe(t, b, c, bus.Handlers{typ: handler})
		subscribe(t, connect(t, target, nil), c, bus.Handlers{typ: handler})

		const n = 50
		for i := range n {
			publish(t, ctx, b, bus.Event{Type: typ, Data: wrapperspb.String(fmt.Sprint(i))})
		}
		// The queue drains: every message acknowledged is removed. The
		// consumer's counters alone can read idle a moment before it has
		// seen the last publishes.
		for {
			info, err := b.JetStream().Stream(ctx, stream)
			if err != nil {
				t.Fatalf("stream info: %v", err)
			}
			if info.CachedInfo().State.Msgs == 0 {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("work queue still holds %d messages", info.CachedInfo().State.Msgs)
			case <-time.After(20 * time.Millisecond):
			}
		}
		waitIdle(t, b, stream, durable)

		mu.Lock()
		defer mu.Unlock()
		if len(seen) != n {
			t.Errorf("handled %d distinct messages, want %d", len(seen), n)
		}
		for id, count := range seen {
			if count != 1 {
				t.Errorf("message %s handled %d times", id, count)
			}
		}
	})
}

func TestSubscription_StopWaitsForHandlerInFlight(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		ctx := testContext(t)
		b := connect(t, target, nil)
		stream, prefix := newStream(t, b, false)
		typ := prefix + ".thing.happened"
		durable := bustest.Unique("d")

		started, release := make(chan struct{}), make(chan struct{})
		var finished atomic.Bool
		sub := subscribe(t, b, bus.Consumer{Stream: stream, Durable: durable}, bus.Handlers{
			typ: func(context.Context, bus.Message, []byte) error {
				close(started)
				<-release
				finished.Store(true)
				return nil
			},
		})
		releaseOnce := sync.OnceFunc(func() { close(release) })
		t.Cleanup(releaseOnce) // runs before the subscription's Stop if the test fails early
		publish(t, ctx, b, bus.Event{Type: typ, Data: wrapperspb.String("x")})
		receive(t, started)

		stopped := make(chan bool)
		go func() {
			sub.Stop()
			stopped <- finished.Load()
		}()
		// Give a Stop that does not wait the chance to return early.
		select {
		case <-stopped:
			t.Fatal("Stop returned while a handler was running")
		case <-time.After(100 * time.Millisecond):
		}
		releaseOnce()
		if !receive(t, stopped) {
			t.Error("Stop returned before the handler finished")
		}
		waitIdle(t, b, stream, durable) // and its ack went out before Stop returned
	})
}

func TestSubscribe_DurableResumesAfterStop(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		ctx := testContext(t)
		b := connect(t, target, nil)
		stream, prefix := newStream(t, b, false)
		typ := prefix + ".thing.happened"
		c := bus.Consumer{Stream: stream, Durable: bustest.Unique("d")}

		var mu sync.Mutex
		var seen []string
		handlers := bus.Handlers{typ: bus.On(func(_ context.Context, _ bus.Message, ev *wrapperspb.StringValue) error {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, ev.GetValue())
			return nil
		})}
		take := func() []string {
			mu.Lock()
			defer mu.Unlock()
			s := seen
			seen = nil
			return s
		}

		sub := subscribe(t, b, c, handlers)
		for _, v := range []string{"a", "b", "c"} {
			publish(t, ctx, b, bus.Event{Type: typ, Data: wrapperspb.String(v)})
		}
		waitIdle(t, b, stream, c.Durable)
		sub.Stop()
		if got := take(); len(got) != 3 {
			t.Fatalf("first run handled %v, want a, b, c", got)
		}

		for _, v := range []string{"d", "e"} {
			publish(t, ctx, b, bus.Event{Type: typ, Data: wrapperspb.String(v)})
		}
		subscribe(t, b, c, handlers)
		waitIdle(t, b, stream, c.Durable)
		got := take()
		if len(got) != 2 || !(got[0] == "d" && got[1] == "e" || got[0] == "e" && got[1] == "d") {
			t.Errorf("second run handled %v, want only d and e", got)
		}
	})
}

func TestOn_UndecodablePayloadIsPoison(t *testing.T) {
	called := false
	h := bus.On(func(context.Context, bus.Message, *wrapperspb.StringValue) error {
		called = true
		return nil
	})
	err := h(t.Context(), bus.Message{Type: "thing.happened"}, []byte{0xff})
	if !errors.Is(err, bus.ErrPoison) || called {
		t.Errorf("err = %v, called = %v; want ErrPoison and no call", err, called)
	}
}

func TestSubscribe_WaitsForTheStreamToBeDeclared(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		b, err := bus.Connect(ctx, bus.Config{URL: target.URL, Source: "test"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		name := bustest.Unique("LATE")
		subject := bustest.Unique("t") + ".late"
		t.Cleanup(func() { _ = b.JetStream().DeleteStream(context.Background(), name) })

		subscribed := make(chan error, 1)
		var sub *bus.Subscription
		go func() {
			var err error
			sub, err = b.Subscribe(ctx, bus.Consumer{Stream: name, Durable: "late"}, bus.Handlers{subject: func(context.Context, bus.Message, []byte) error { return nil }})
			subscribed <- err
		}()
		// The consumer's owner starts later than the consumer.
		if err := b.EnsureStream(ctx, bus.Stream{Name: name, Subjects: []string{subject}}); err != nil {
			t.Fatal(err)
		}
		if err := <-subscribed; err != nil {
			t.Fatalf("subscribe before the stream existed: %v", err)
		}
		sub.Stop()

		short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancelShort()
		if _, err := b.Subscribe(short, bus.Consumer{Stream: bustest.Unique("NEVER"), Durable: "x"}, bus.Handlers{"x": nil}); err == nil {
			t.Fatal("subscribe to a stream that never comes must fail when ctx ends")
		}
	})
}

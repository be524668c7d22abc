package bus_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/bus/bustest"
	"github.com/mercato-shop/mercato/platform/telemetry"
)

// newDeadLetterStream declares a dead-letter stream of unique name, deleted
// at cleanup.
func newDeadLetterStream(t *testing.T, b *bus.Bus) (string, *bus.DeadLetters) {
	t.Helper()
	name := bustest.Unique("DL")
	if err := b.EnsureStream(testContext(t), bus.DeadLetterStream(name)); err != nil {
		t.Fatalf("ensure dead-letter stream: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if err := b.JetStream().DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Errorf("delete stream %s: %v", name, err)
		}
	})
	return name, b.DeadLetters(name)
}

// waitDeadLetters polls until dls holds n dead letters and returns them.
func waitDeadLetters(t *testing.T, dls *bus.DeadLetters, n int) []bus.DeadLetter {
	t.Helper()
	ctx := testContext(t)
	for {
		got, err := dls.Count(ctx)
		if err != nil {
			t.Fatalf("count dead letters: %v", err)
		}
		if got == n {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d dead letters, want %d", got, n)
		case <-time.After(20 * time.Millisecond):
		}
	}
	list, err := dls.List(ctx, 100, 0)
	if err != nil {
		t.Fatalf("list dead letters: %v", err)
	}
	if len(list) != n {
		t.Fatalf("listed %d dead letters, want %d", len(list), n)
	}
	return list
}

// queueLen is the number of messages a stream holds.
func queueLen(t *testing.T, b *bus.Bus, stream string) uint64 {
	t.Helper()
	s, err := b.JetStream().Stream(testContext(t), stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	return s.CachedInfo().State.Msgs
}

func rawPublish(t *testing.T, b *bus.Bus, subject string, header nats.Header, data []byte) {
	t.Helper()
	if _, err := b.JetStream().PublishMsg(testContext(t), &nats.Msg{Subject: subject, Header: header, Data: data}); err != nil {
		t.Fatalf("publish raw: %v", err)
	}
}

func payload(t *testing.T, data []byte) string {
	t.Helper()
	var v wrapperspb.StringValue
	if err := proto.Unmarshal(data, &v); err != nil {
		t.Fatalf("payload: %v", err)
	}
	return v.GetValue()
}

func TestSubscribe_ExhaustedMessageIsDeadLetteredWithReasonAndHeaders(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		ctx := testContext(t)
		tp := telemetry.NewTracerProvider("bustest") // so that a traceparent travels
		t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		b := connect(t, target, tp)
		stream, prefix := newStream(t, b, true)
		dlName, dls := newDeadLetterStream(t, b)
		typ := prefix + ".cmd.do"
		durable := bustest.Unique("d")

		var attempts atomic.Int32
		first, good := make(chan nats.Header, 1), make(chan string, 10)
		subscribe(t, b, bus.Consumer{Stream: stream, Durable: durable, DeadLetter: dlName, MaxDeliver: 3, Backoff: []time.Duration{time.Millisecond}},
			bus.Handlers{typ: bus.On(func(_ context.Context, m bus.Message, ev *wrapperspb.StringValue) error {
				if ev.GetValue() != "bad" {
					good <- ev.GetValue()
					return nil
				}
				if attempts.Add(1) == 1 {
					first <- m.Header
				}
				return errors.New("provider down")
			})})

		correlation := telemetry.NewCorrelationID()
		bad := bus.Event{ID: uuid.NewString(), Type: typ, Subject: "thing-1", Data: wrapperspb.String("bad")}
		publish(t, telemetry.WithCorrelationID(ctx, correlation), b, bad)
		publish(t, ctx, b, bus.Event{Type: typ, Data: wrapperspb.String("good")})

		if v := receive(t, good); v != "good" {
			t.Errorf("handled %q, want the good message", v)
		}
		original := receive(t, first)
		dl := waitDeadLetters(t, dls, 1)[0]
		waitIdle(t, b, stream, durable)
		if n := attempts.Load(); n != 3 {
			t.Errorf("bad message handled %d times, want MaxDeliver = 3", n)
		}
		if n := queueLen(t, b, stream); n != 0 {
			t.Errorf("work queue still holds %d messages", n)
		}

		if dl.Stream != stream || dl.Subject != typ || dl.Consumer != durable || dl.Delivered != 3 {
			t.Errorf("dead letter from %s %s %s after %d deliveries, want %s %s %s after 3",
				dl.Stream, dl.Subject, dl.Consumer, dl.Delivered, stream, typ, durable)
		}
		if !strings.Contains(dl.Reason, "provider down") {
			t.Errorf("reason = %q, want the handler's error", dl.Reason)
		}
		if dl.ID != bad.ID || dl.Type != typ || dl.Source != "bustest" || dl.CESubject != "thing-1" || dl.Time.IsZero() || dl.DeadAt.IsZero() {
			t.Errorf("dead letter = %+v, want ce-id %s, type %s, source bustest, ce-subject thing-1 and times", dl, bad.ID, typ)
		}
		if v := payload(t, dl.Data); v != "bad" {
			t.Errorf("payload = %q, want the original", v)
		}
		if original.Get("traceparent") == "" || original.Get(telemetry.CorrelationHeader) != correlation {
			t.Fatalf("original headers %v lack a traceparent or correlation id %s", original, correlation)
		}
		for k, v := range original {
			if k != jetstream.MsgIDHeader && !slices.Equal(dl.Header[k], v) {
				t.Errorf("header %s = %q, want the original %q", k, dl.Header[k], v)
			}
		}
		for k := range dl.Header {
			if strings.HasPrefix(k, "Mercato-DL-") {
				t.Errorf("Header holds %s; want the original headers only", k)
			}
		}
		dlStream, err := b.JetStream().Stream(ctx, dlName)
		if err != nil {
			t.Fatalf("dead-letter stream: %v", err)
		}
		raw, err := dlStream.GetMsg(ctx, dl.Seq)
		if err != nil {
			t.Fatalf("get dead letter: %v", err)
		}
		if want := strings.ToLower(dlName) + "." + stream + "." + typ; raw.Subject != want {
			t.Errorf("dead letter subject = %s, want %s", raw.Subject, want)
		}
	})
}

func TestSubscribe_PoisonIsDeadLetteredAtOnce(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		ctx := testContext(t)
		b := connect(t, target, nil)
		stream, prefix := newStream(t, b, true)
		dlName, dls := newDeadLetterStream(t, b)
		typ := prefix + ".cmd.do"
		durable := bustest.Unique("d")

		var calls atomic.Int32
		h, got := collect()
		subscribe(t, b, bus.Consumer{Stream: stream, Durable: durable, DeadLetter: dlName}, bus.Handlers{
			typ: func(ctx context.Context, m bus.Message, data []byte) error {
				calls.Add(1)
				return h(ctx, m, data)
			},
		})

		rawPublish(t, b, typ, nats.Header{bus.HeaderType: {typ}, bus.HeaderID: {"undecodable"}}, []byte{0xff})
		rawPublish(t, b, prefix+".cmd.unknown", nats.Header{bus.HeaderType: {prefix + ".cmd.unknown"}}, nil)
		rawPublish(t, b, prefix+".cmd.untyped", nil, []byte("?"))
		publish(t, ctx, b, bus.Event{Type: typ, Data: wrapperspb.String("good")})

		if d := receive(t, got); d.data.GetValue() != "good" {
			t.Errorf("handled %q, want the good message", d.data.GetValue())
		}
		list := waitDeadLetters(t, dls, 3)
		waitIdle(t, b, stream, durable)
		if n := calls.Load(); n != 2 {
			t.Errorf("handler calls = %d, want 2 (poison once, good once)", n)
		}
		bySubject := map[string]bus.DeadLetter{}
		for _, dl := range list {
			bySubject[dl.Subject] = dl
			if dl.Delivered != 1 || !strings.Contains(dl.Reason, bus.ErrPoison.Error()) {
				t.Errorf("dead letter %s: delivered %d, reason %q; want 1, poison", dl.Subject, dl.Delivered, dl.Reason)
			}
		}
		for _, subject := range []string{typ, prefix + ".cmd.unknown", prefix + ".cmd.untyped"} {
			if _, ok := bySubject[subject]; !ok {
				t.Errorf("no dead letter from %s", subject)
			}
		}
		if dl := bySubject[typ]; dl.ID != "undecodable" || !slices.Equal(dl.Data, []byte{0xff}) {
			t.Errorf("dead letter = %+v, want the undecodable message as it was", dl)
		}
	})
}

func TestDeadLetters_ReplayedMessageIsHandledOnceTheHandlerIsFixed(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		ctx := testContext(t)
		b := connect(t, target, nil)
		stream, prefix := newStream(t, b, true)
		dlName, dls := newDeadLetterStream(t, b)
		typ := prefix + ".cmd.do"
		durable := bustest.Unique("d")

		var broken atomic.Bool
		broken.Store(true)
		handled := make(chan bus.Message, 10)
		subscribe(t, b, bus.Consumer{Stream: stream, Durable: durable, DeadLetter: dlName, MaxDeliver: 2, Backoff: []time.Duration{time.Millisecond}},
			bus.Handlers{typ: func(_ context.Context, m bus.Message, _ []byte) error {
				if broken.Load() {
					return errors.New("broken")
				}
				handled <- m
				return nil
			}})

		correlation := telemetry.NewCorrelationID()
		ev := bus.Event{ID: uuid.NewString(), Type: typ, Data: wrapperspb.String("x")}
		publish(t, telemetry.WithCorrelationID(ctx, correlation), b, ev)
		dl := waitDeadLetters(t, dls, 1)[0]

		broken.Store(false)
		if err := dls.Replay(ctx, dl.Seq); err != nil {
			t.Fatalf("replay: %v", err)
		}
		m := receive(t, handled)
		if m.ID != ev.ID || m.Delivered != 1 || m.Header.Get(telemetry.CorrelationHeader) != correlation {
			t.Errorf("replayed message = %+v, want ce-id %s, first delivery, correlation id %s", m, ev.ID, correlation)
		}
		if id := m.Header.Get(jetstream.MsgIDHeader); id == "" || id == ev.ID {
			t.Errorf("replayed Nats-Msg-Id = %q, want a new one", id)
		}
		for k := range m.Header {
			if strings.HasPrefix(k, "Mercato-DL-") {
				t.Errorf("replayed message carries %s", k)
			}
		}
		waitIdle(t, b, stream, durable)
		if n, err := dls.Count(ctx); err != nil || n != 0 {
			t.Errorf("dead letters after replay = %d (%v), want 0", n, err)
		}
		if err := dls.Replay(ctx, dl.Seq); !errors.Is(err, bus.ErrNotFound) {
			t.Errorf("replay again: %v, want ErrNotFound", err)
		}
		if len(handled) != 0 {
			t.Errorf("replayed message handled more than once")
		}
	})
}

func TestDeadLetters_ReplayAllReplaysEveryDeadLetter(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		ctx := testContext(t)
		b := connect(t, target, nil)
		stream, prefix := newStream(t, b, true)
		dlName, dls := newDeadLetterStream(t, b)
		typ := prefix + ".cmd.do"
		durable := bustest.Unique("d")

		var broken atomic.Bool
		broken.Store(true)
		handled := make(chan string, 10)
		subscribe(t, b, bus.Consumer{Stream: stream, Durable: durable, DeadLetter: dlName, MaxDeliver: 1},
			bus.Handlers{typ: func(_ context.Context, m bus.Message, _ []byte) error {
				if broken.Load() {
					return errors.New("broken")
				}
				handled <- m.ID
				return nil
			}})

		var ids []string
		for range 3 {
			ev := bus.Event{ID: uuid.NewString(), Type: typ, Data: wrapperspb.String("x")}
			publish(t, ctx, b, ev)
			ids = append(ids, ev.ID)
		}
		waitDeadLetters(t, dls, 3)

		broken.Store(false)
		n, err := dls.ReplayAll(ctx)
		if err != nil || n != 3 {
			t.Fatalf("replay all = %d, %v; want 3", n, err)
		}
		var got []string
		for range 3 {
			got = append(got, receive(t, handled))
		}
		slices.Sort(ids)
		slices.Sort(got)
		if !slices.Equal(got, ids) {
			t.Errorf("handled %v, want %v", got, ids)
		}
		waitIdle(t, b, stream, durable)
		if n, err := dls.Count(ctx); err != nil || n != 0 {
			t.Errorf("dead letters after replay = %d (%v), want 0", n, err)
		}
		if n, err := dls.ReplayAll(ctx); err != nil || n != 0 {
			t.Errorf("replay all on an empty stream = %d, %v; want 0", n, err)
		}
	})
}

func TestDeadLetters_ListPagesOldestFirst(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		ctx := testContext(t)
		b := connect(t, target, nil)
		stream, prefix := newStream(t, b, true)
		dlName, dls := newDeadLetterStream(t, b)
		subscribe(t, b, bus.Consumer{Stream: stream, Durable: bustest.Unique("d"), DeadLetter: dlName},
			bus.Handlers{prefix + ".cmd.do": func(context.Context, bus.Message, []byte) error { return bus.ErrPoison }})
		for i := range 3 {
			rawPublish(t, b, prefix+".cmd.do", nats.Header{bus.HeaderType: {prefix + ".cmd.do"}, bus.HeaderID: {fmt.Sprint(i)}}, nil)
			waitDeadLetters(t, dls, i+1) // one at a time, so that the order is known
		}

		page, err := dls.List(ctx, 2, 0)
		if err != nil || len(page) != 2 || page[0].ID != "0" || page[1].ID != "1" || page[0].Seq >= page[1].Seq {
			t.Fatalf("first page = %+v, %v; want dead letters 0 and 1", page, err)
		}
		page, err = dls.List(ctx, 2, page[1].Seq)
		if err != nil || len(page) != 1 || page[0].ID != "2" {
			t.Fatalf("second page = %+v, %v; want dead letter 2", page, err)
		}
		page, err = dls.List(ctx, 2, page[0].Seq)
		if err != nil || len(page) != 0 {
			t.Errorf("page after the last = %+v, %v; want none", page, err)
		}
		if _, err := dls.List(ctx, 0, 0); err == nil {
			t.Error("list with limit 0 must fail")
		}
	})
}

func TestDeadLetters_DiscardRemovesForGood(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		ctx := testContext(t)
		b := connect(t, target, nil)
		stream, prefix := newStream(t, b, true)
		dlName, dls := newDeadLetterStream(t, b)
		durable := bustest.Unique("d")
		subscribe(t, b, bus.Consumer{Stream: stream, Durable: durable, DeadLetter: dlName},
			bus.Handlers{prefix + ".cmd.do": func(context.Context, bus.Message, []byte) error { return bus.ErrPoison }})
		rawPublish(t, b, prefix+".cmd.do", nats.Header{bus.HeaderType: {prefix + ".cmd.do"}}, nil)
		dl := waitDeadLetters(t, dls, 1)[0]

		if err := dls.Discard(ctx, dl.Seq); err != nil {
			t.Fatalf("discard: %v", err)
		}
		if n, err := dls.Count(ctx); err != nil || n != 0 {
			t.Errorf("dead letters after discard = %d (%v), want 0", n, err)
		}
		waitIdle(t, b, stream, durable)
		if n := queueLen(t, b, stream); n != 0 {
			t.Errorf("discard sent the message back: the queue holds %d", n)
		}
		for name, op := range map[string]func() error{
			"get":            func() error { _, err := dls.Get(ctx, dl.Seq); return err },
			"discard":        func() error { return dls.Discard(ctx, dl.Seq) },
			"replay":         func() error { return dls.Replay(ctx, dl.Seq) },
			"get never seen": func() error { _, err := dls.Get(ctx, dl.Seq+100); return err },
		} {
			if err := op(); !errors.Is(err, bus.ErrNotFound) {
				t.Errorf("%s discarded dead letter: %v, want ErrNotFound", name, err)
			}
		}
	})
}

func TestSubscribe_RedeliveredLastAttemptIsDeadLetteredOnce(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		ctx := testContext(t)
		b := connect(t, target, nil)
		stream, prefix := newStream(t, b, true)
		dlName, dls := newDeadLetterStream(t, b)
		typ := prefix + ".cmd.do"

		// The first and only allowed delivery overruns AckWait, so the broker
		// redelivers it; both deliveries fail and dead-letter the message,
		// as when the Term of a dead-lettered message is lost.
		started, redelivered := make(chan struct{}, 1), make(chan struct{})
		closeRedelivered := sync.OnceFunc(func() { close(redelivered) })
		sub := subscribe(t, b, bus.Consumer{Stream: stream, Durable: bustest.Unique("d"), DeadLetter: dlName, MaxDeliver: 1, AckWait: 200 * time.Millisecond},
			bus.Handlers{typ: func(_ context.Context, m bus.Message, _ []byte) error {
				if m.Delivered == 1 {
					started <- struct{}{}
					<-redelivered
				} else {
					closeRedelivered()
				}
				return errors.New("failed")
			}})
		t.Cleanup(closeRedelivered) // runs before the subscription's Stop if the test fails early
		publish(t, ctx, b, bus.Event{Type: typ, Data: wrapperspb.String("x")})
		receive(t, started)
		receive(t, redelivered)
		waitDeadLetters(t, dls, 1)
		sub.Stop() // waits for both deliveries to be done with
		if n, err := dls.Count(ctx); err != nil || n != 1 {
			t.Errorf("dead letters = %d (%v), want 1", n, err)
		}
	})
}

func TestSubscribe_MessageComesBackWhenDeadLetteringFails(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		ctx := testContext(t)
		b := connect(t, target, nil)
		stream, prefix := newStream(t, b, true)
		dlName, dls := newDeadLetterStream(t, b)
		typ := prefix + ".cmd.do"
		durable := bustest.Unique("d")

		attempts := make(chan uint64, 2)
		subscribe(t, b, bus.Consumer{Stream: stream, Durable: durable, DeadLetter: dlName, MaxDeliver: 1, Backoff: []time.Duration{10 * time.Millisecond}},
			bus.Handlers{typ: func(_ context.Context, m bus.Message, _ []byte) error {
				select {
				case attempts <- m.Delivered:
				default: // later attempts: the first two tell enough
				}
				return errors.New("failed")
			}})
		// The dead-letter stream goes away after the consumer checked it.
		if err := b.JetStream().DeleteStream(ctx, dlName); err != nil {
			t.Fatalf("delete dead-letter stream: %v", err)
		}

		publish(t, ctx, b, bus.Event{Type: typ, Data: wrapperspb.String("x")})
		if first, second := receive(t, attempts), receive(t, attempts); first != 1 || second != 2 {
			t.Fatalf("deliveries %d, %d; want the last allowed one, then another after dead-lettering failed", first, second)
		}
		if err := b.EnsureStream(ctx, bus.DeadLetterStream(dlName)); err != nil {
			t.Fatalf("ensure dead-letter stream: %v", err)
		}
		dl := waitDeadLetters(t, dls, 1)[0]
		waitIdle(t, b, stream, durable)
		if n := queueLen(t, b, stream); n != 0 || dl.Delivered < 2 {
			t.Errorf("queue holds %d, dead letter delivered %d times; want 0 and at least 2", n, dl.Delivered)
		}
	})
}

func TestSubscribe_RequiresTheDeadLetterStream(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		b := connect(t, target, nil)
		stream, prefix := newStream(t, b, true)
		_, err := b.Subscribe(testContext(t), bus.Consumer{Stream: stream, Durable: "d", DeadLetter: bustest.Unique("MISSING")},
			bus.Handlers{prefix + ".x": func(context.Context, bus.Message, []byte) error { return nil }})
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Errorf("subscribe with a missing dead-letter stream: %v, want ErrStreamNotFound", err)
		}
	})
}

func TestConsumer_DefaultBackoffGrowsExponentiallyWithJitter(t *testing.T) {
	for n := uint64(1); n <= 20; n++ {
		ceiling := min(100*time.Millisecond<<(n-1), 30*time.Second)
		seen := map[time.Duration]bool{}
		for range 20 {
			d := bus.BackoffOf(bus.Consumer{}, n)
			if d < ceiling/2 || d >= ceiling {
				t.Fatalf("backoff after attempt %d = %s, want in [%s, %s)", n, d, ceiling/2, ceiling)
			}
			seen[d] = true
		}
		if len(seen) < 2 {
			t.Errorf("backoff after attempt %d is always %v: no jitter", n, seen)
		}
	}
	if d := bus.BackoffOf(bus.Consumer{}, 0); d >= 100*time.Millisecond {
		t.Errorf("backoff before any attempt = %s, want that of the first", d)
	}
}

func TestConsumer_BackoffOverridesTheDefault(t *testing.T) {
	c := bus.Consumer{Backoff: []time.Duration{time.Second, 2 * time.Second}}
	for n, want := range map[uint64]time.Duration{0: time.Second, 1: time.Second, 2: 2 * time.Second, 9: 2 * time.Second} {
		if got := bus.BackoffOf(c, n); got != want {
			t.Errorf("backoff after attempt %d = %s, want %s", n, got, want)
		}
	}
}

func TestConsumer_MaxDeliverIsBoundedWithADeadLetterStream(t *testing.T) {
	for _, tc := range []struct {
		c    bus.Consumer
		want int
	}{
		{bus.Consumer{}, -1},
		{bus.Consumer{DeadLetter: "DL"}, bus.DefaultMaxDeliver},
		{bus.Consumer{DeadLetter: "DL", MaxDeliver: 3}, 3},
		{bus.Consumer{MaxDeliver: 3}, 3},
	} {
		if got := bus.WithDefaults(tc.c).MaxDeliver; got != tc.want {
			t.Errorf("MaxDeliver of %+v = %d, want %d", tc.c, got, tc.want)
		}
	}
}

package bus_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/bus/bustest"
)

// follow runs Follow on a goroutine and sends each record it reads, with
// the size of the batch it came in; stop ends it and returns its error.
func follow(t *testing.T, b *bus.Bus, f bus.Follow) (records <-chan followed, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(testContext(t))
	ch := make(chan followed, 1000)
	done := make(chan error, 1)
	go func() {
		done <- b.Follow(ctx, f, func(_ context.Context, batch []bus.Record) error {
			for _, r := range batch {
				ch <- followed{r, len(batch)}
			}
			return nil
		})
	}()
	var stopped bool
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return receive(t, done)
	}
	t.Cleanup(func() { _ = stop() })
	return ch, stop
}

type followed struct {
	bus.Record
	batch int
}

func publishN(t *testing.T, b *bus.Bus, typ string, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		publish(t, testContext(t), b, bus.Event{Type: typ, Subject: fmt.Sprint(i), Data: wrapperspb.String(fmt.Sprint("m", i))})
	}
}

// Reading from a sequence delivers that message and every later one in
// stream order, with payload and headers, then keeps delivering what is
// published after; cancelling ctx ends it with ctx's error and leaves no
// consumer behind.
func TestFollow_ReadsInStreamOrderFromASequenceAndTails(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		b := connect(t, target, nil)
		stream, prefix := newStream(t, b, false)
		typ := prefix + ".thing.happened"
		publishN(t, b, typ, 1, 10)

		got, stop := follow(t, b, bus.Follow{Stream: stream, From: 4})
		for seq := uint64(4); seq <= 10; seq++ {
			r := receive(t, got)
			if r.Sequence != seq || r.Type != typ || r.Subject != fmt.Sprint(seq) || r.Source != "bustest" || r.ID == "" {
				t.Fatalf("record %+v, want sequence %d of type %s", r.Record, seq, typ)
			}
			var v wrapperspb.StringValue
			if err := proto.Unmarshal(r.Data, &v); err != nil || v.GetValue() != fmt.Sprint("m", seq) {
				t.Fatalf("payload of %d: %q (%v)", seq, v.GetValue(), err)
			}
			if want := 10 - seq; r.Pending != want {
				t.Fatalf("pending after %d: %d, want %d", seq, r.Pending, want)
			}
		}

		publishN(t, b, typ, 11, 12)
		for seq := uint64(11); seq <= 12; seq++ {
			if r := receive(t, got); r.Sequence != seq {
				t.Fatalf("tailing: sequence %d, want %d", r.Sequence, seq)
			}
		}
		if err := stop(); !errors.Is(err, context.Canceled) {
			t.Fatalf("Follow returned %v after cancel, want context.Canceled", err)
		}
		st, err := b.JetStream().Stream(testContext(t), stream)
		if err != nil {
			t.Fatal(err)
		}
		if n := st.CachedInfo().State.Consumers; n != 0 {
			t.Fatalf("%d consumers left on the stream after Follow returned", n)
		}
	})
}

// A backlog is handed over in batches of MaxBatch, in order, and the last
// batch ends where nothing more was pending.
func TestFollow_HandsABacklogOverInBatches(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		b := connect(t, target, nil)
		stream, prefix := newStream(t, b, false)
		publishN(t, b, prefix+".x", 1, 50)

		got, _ := follow(t, b, bus.Follow{Stream: stream, MaxBatch: 20})
		var sizes []int
		for seq := uint64(1); seq <= 50; seq++ {
			r := receive(t, got)
			if r.Sequence != seq {
				t.Fatalf("sequence %d, want %d", r.Sequence, seq)
			}
			if seq == 1 || seq == 21 || seq == 41 {
				sizes = append(sizes, r.batch)
			}
		}
		if fmt.Sprint(sizes) != "[20 20 10]" {
			t.Fatalf("batch sizes %v, want [20 20 10]", sizes)
		}
	})
}

// A failing handler stops the reading: Follow returns its error, and a new
// Follow from the failed batch reads it again.
func TestFollow_StopsAtAFailingBatch(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		ctx := testContext(t)
		b := connect(t, target, nil)
		stream, prefix := newStream(t, b, false)
		publishN(t, b, prefix+".x", 1, 3)

		boom := errors.New("boom")
		var failedAt uint64
		err := b.Follow(ctx, bus.Follow{Stream: stream, MaxBatch: 1}, func(_ context.Context, batch []bus.Record) error {
			if batch[0].Sequence == 2 {
				failedAt = 2
				return boom
			}
			return nil
		})
		if !errors.Is(err, boom) || failedAt != 2 {
			t.Fatalf("Follow returned %v (failed at %d), want the handler's error at 2", err, failedAt)
		}

		var again []uint64
		err = b.Follow(ctx, bus.Follow{Stream: stream, From: failedAt}, func(_ context.Context, batch []bus.Record) error {
			for _, r := range batch {
				again = append(again, r.Sequence)
			}
			if again[len(again)-1] == 3 {
				return boom
			}
			return nil
		})
		if !errors.Is(err, boom) || fmt.Sprint(again) != "[2 3]" {
			t.Fatalf("resumed reading %v (%v), want [2 3]", again, err)
		}
	})
}

// A stream declared after Follow started is waited for, then read.
func TestFollow_WaitsForAStreamDeclaredLater(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		b := connect(t, target, nil)
		stream, prefix := bustest.Unique("S"), bustest.Unique("t")
		got, _ := follow(t, b, bus.Follow{Stream: stream})

		if err := b.EnsureStream(testContext(t), bus.Stream{Name: stream, Subjects: []string{prefix + ".>"}}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.JetStream().DeleteStream(context.Background(), stream) })
		publishN(t, b, prefix+".x", 1, 1)
		if r := receive(t, got); r.Sequence != 1 {
			t.Fatalf("sequence %d, want 1", r.Sequence)
		}
	})
}

// With Linger, a reader that has caught up waits a little after a new
// message for the ones published right after it, and gets them in one
// batch; without, each comes on its own once nothing is pending.
func TestFollow_LingerBatchesARunOfNewMessages(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		b := connect(t, target, nil)
		stream, prefix := newStream(t, b, false)
		// MaxBatch ends the batch as soon as the run is in, long before Linger.
		got, _ := follow(t, b, bus.Follow{Stream: stream, MaxBatch: 5, Linger: waitFor})
		publishN(t, b, prefix+".x", 1, 5)
		for seq := uint64(1); seq <= 5; seq++ {
			if r := receive(t, got); r.Sequence != seq || r.batch != 5 {
				t.Fatalf("record %d came in a batch of %d, want 5", r.Sequence, r.batch)
			}
		}
	})
}

// A stream deleted under a reader does not keep Follow from returning when
// ctx ends.
func TestFollow_ReturnsOnCancelAfterItsStreamIsDeleted(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		b := connect(t, target, nil)
		stream, prefix := newStream(t, b, false)
		got, stop := follow(t, b, bus.Follow{Stream: stream})
		publishN(t, b, prefix+".x", 1, 1)
		receive(t, got)
		if err := b.JetStream().DeleteStream(testContext(t), stream); err != nil {
			t.Fatal(err)
		}
		if err := stop(); !errors.Is(err, context.Canceled) {
			t.Fatalf("Follow returned %v, want context.Canceled", err)
		}
	})
}

package adapters_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/outbox"
	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/platform/storage/storagetest"
	"github.com/mercato-shop/mercato/services/payment/adapters"
	"github.com/mercato-shop/mercato/services/payment/domain"
	"github.com/mercato-shop/mercato/services/payment/migrations"
)

// waitFor bounds every wait for an asynchronous outcome.
const waitFor = 20 * time.Second

// broker starts an embedded NATS server, shut down at cleanup, and returns
// its URL.
func broker(t *testing.T) string {
	t.Helper()
	srv, err := bus.StartServer(t.Context(), bus.ServerConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("start nats: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	return srv.ClientURL()
}

// connect returns a connection to url, closed at cleanup, on a broker that
// has payment's event stream.
func connect(t *testing.T, url string) *bus.Bus {
	t.Helper()
	b, err := bus.Connect(t.Context(), bus.Config{URL: url, Source: "payment"})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(b.Close)
	if err := b.EnsureStream(t.Context(), adapters.EventStream()); err != nil {
		t.Fatalf("ensure stream: %v", err)
	}
	return b
}

// newOutbox returns an outbox on db, with its table, that relays to b. Its
// relay is not started: each test says when it runs.
func newOutbox(t *testing.T, db *storage.DB, b *bus.Bus) *outbox.Outbox {
	t.Helper()
	o := outbox.New(db, b, outbox.Config{})
	if err := o.EnsureSchema(t.Context()); err != nil {
		t.Fatalf("outbox schema: %v", err)
	}
	t.Cleanup(func() {
		if err := o.Stop(context.Background()); err != nil {
			t.Errorf("stop relay: %v", err)
		}
	})
	return o
}

func pending(t *testing.T, o *outbox.Outbox) int {
	t.Helper()
	n, err := o.Pending(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func startRelay(t *testing.T, o *outbox.Outbox) {
	t.Helper()
	if err := o.Start(t.Context()); err != nil {
		t.Fatalf("start relay: %v", err)
	}
}

// waitDrained waits until the relay has published all that o holds.
func waitDrained(t *testing.T, o *outbox.Outbox) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for pending(t, o) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("events still pending after %s", waitFor)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
}

// published returns the type and id of each event payment's stream holds,
// in stream order.
func published(t *testing.T, b *bus.Bus) []string {
	t.Helper()
	s, err := b.JetStream().Stream(t.Context(), adapters.EventStream().Name)
	if err != nil {
		t.Fatal(err)
	}
	st := s.CachedInfo().State
	var out []string
	for seq := st.FirstSeq; st.Msgs > 0 && seq <= st.LastSeq; seq++ {
		m, err := s.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatalf("get message %d: %v", seq, err)
		}
		out = append(out, m.Subject+" "+m.Header.Get(jetstream.MsgIDHeader))
	}
	return out
}

func describe(events ...bus.Event) []string {
	out := make([]string, len(events))
	for i, ev := range events {
		out[i] = ev.Type + " " + ev.ID
	}
	return out
}

func TestStore_UpdateCommitsItsEventsOrNone(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := t.Context()
		b := connect(t, broker(t))
		ob := newOutbox(t, db, b)
		s := adapters.NewStore(db, ob)
		p, err := s.GetOrCreate(ctx, newPayment(t, uuid.NewString(), 1000))
		if err != nil {
			t.Fatal(err)
		}
		// A second delivery that loaded the payment while it was PENDING.
		late, err := s.ByID(ctx, p.ID())
		if err != nil {
			t.Fatal(err)
		}

		if err := p.Capture("ch_1", time.Now()); err != nil {
			t.Fatal(err)
		}
		completed, err := adapters.Events{}.Charged(p)
		if err != nil {
			t.Fatal(err)
		}
		// The second event cannot be encoded: the transaction rolls back
		// after the first one was added.
		if ok, err := s.Update(ctx, p, domain.Pending, completed, bus.Event{ID: uuid.NewString()}); err == nil || ok {
			t.Fatalf("update with an event that cannot be written: %v %v, want an error", ok, err)
		}
		if got, err := s.ByID(ctx, p.ID()); err != nil || got.Status() != domain.Pending {
			t.Fatalf("after the rollback: %+v %v, want PENDING", got, err)
		}
		if n := pending(t, ob); n != 0 {
			t.Fatalf("%d events pending after the rollback, want 0", n)
		}

		if ok, err := s.Update(ctx, p, domain.Pending, completed); err != nil || !ok {
			t.Fatalf("update: %v %v", ok, err)
		}
		// The delivery that lost the race adds nothing.
		if err := late.Decline(domain.ReasonDeclined, "", time.Now()); err != nil {
			t.Fatal(err)
		}
		failed, err := adapters.Events{}.Charged(late)
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := s.Update(ctx, late, domain.Pending, failed); err != nil || ok {
			t.Fatalf("late update: %v %v, want it to lose", ok, err)
		}
		if n := pending(t, ob); n != 1 {
			t.Fatalf("%d events pending, want the update's one", n)
		}
		if got := published(t, b); len(got) != 0 {
			t.Fatalf("published %v before the relay ran", got)
		}

		startRelay(t, ob)
		waitDrained(t, ob)
		if got, want := published(t, b), describe(completed); !slices.Equal(got, want) {
			t.Fatalf("published %v, want %v", got, want)
		}
	})
}

func TestStore_EventsCommittedBeforeACrashArePublishedOnce(t *testing.T) {
	engines := storagetest.Engines(t)
	for _, e := range engines {
		t.Run(e.Name, func(t *testing.T) {
			ctx := t.Context()
			url := broker(t)
			events := adapters.Events{}

			// The first process charges and refunds; its relay never runs,
			// as when it dies right after its commits.
			db := storagetest.Open(t, e, migrations.FS)
			crashed := newOutbox(t, db, connect(t, url))
			s := adapters.NewStore(db, crashed)
			p, err := s.GetOrCreate(ctx, newPayment(t, uuid.NewString(), 2500))
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Capture("ch_1", time.Now()); err != nil {
				t.Fatal(err)
			}
			completed, err := events.Charged(p)
			if err != nil {
				t.Fatal(err)
			}
			if ok, err := s.Update(ctx, p, domain.Pending, completed); err != nil || !ok {
				t.Fatalf("capture: %v %v", ok, err)
			}
			if err := p.Refund("re_1", time.Now()); err != nil {
				t.Fatal(err)
			}
			refunded := events.Refunded(p)
			if ok, err := s.Update(ctx, p, domain.Captured, refunded); err != nil || !ok {
				t.Fatalf("refund: %v %v", ok, err)
			}
			// A repeated refund command answers again: still pending, not added twice.
			if err := s.Announce(ctx, refunded); err != nil {
				t.Fatal(err)
			}
			if n := pending(t, crashed); n != 2 {
				t.Fatalf("%d events pending, want 2", n)
			}

			// The restarted process finds them and publishes them in order.
			db = storagetest.Open(t, e, nil)
			b := connect(t, url)
			restarted := newOutbox(t, db, b)
			startRelay(t, restarted)
			waitDrained(t, restarted)
			want := describe(completed, refunded)
			if got := published(t, b); !slices.Equal(got, want) {
				t.Fatalf("published %v, want %v", got, want)
			}

			// The refund command, redelivered after the restart, answers
			// once more; the broker keeps one.
			s = adapters.NewStore(db, restarted)
			if err := s.Announce(ctx, refunded); err != nil {
				t.Fatal(err)
			}
			waitDrained(t, restarted)
			if got := published(t, b); !slices.Equal(got, want) {
				t.Fatalf("published %v after the repeated answer, want %v", got, want)
			}
		})
	}
	if len(engines) == 1 {
		t.Run("postgres", func(t *testing.T) { t.Skip("set MERCATO_TEST_POSTGRES to run it") })
	}
}

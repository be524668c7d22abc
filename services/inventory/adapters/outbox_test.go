package adapters_test

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/outbox"
	"github.com/mercato-shop/mercato/platform/outbox/outboxtest"
	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/platform/storage/storagetest"
	"github.com/mercato-shop/mercato/services/inventory/adapters"
	"github.com/mercato-shop/mercato/services/inventory/app"
	"github.com/mercato-shop/mercato/services/inventory/domain"
	"github.com/mercato-shop/mercato/services/inventory/migrations"
)

func startBus(t *testing.T) string { return outboxtest.StartBus(t, adapters.EventStream()) }

func connect(t *testing.T, url string) *bus.Bus { return outboxtest.Connect(t, url, "inventory") }

func newOutbox(t *testing.T, db *storage.DB, url string, cfg outbox.Config) *outbox.Outbox {
	return outboxtest.New(t, db, url, "inventory", cfg)
}

// newStore returns a store on db whose answers go to an outbox that is
// never relayed.
func newStore(t *testing.T, db *storage.DB) *adapters.Store {
	t.Helper()
	return adapters.NewStore(db, newOutbox(t, db, startBus(t), outbox.Config{}))
}

func pending(t *testing.T, o *outbox.Outbox) int { return outboxtest.Pending(t, o) }

func eventually(t *testing.T, what string, cond func() bool) { outboxtest.Eventually(t, what, cond) }

// answers returns "<type> <order id>" of every event stored in the inventory
// stream, in stream order.
func answers(t *testing.T, b *bus.Bus) []string {
	return outboxtest.Stored(t, b, adapters.EventStream().Name)
}

var errInjected = errors.New("injected failure")

// failAfterAdd adds the events to the transaction, then fails as a later
// statement of the same transaction would.
type failAfterAdd struct{ *outbox.Outbox }

func (w failAfterAdd) Add(ctx context.Context, tx *sql.Tx, events ...bus.Event) error {
	if err := w.Outbox.Add(ctx, tx, events...); err != nil {
		return err
	}
	return errInjected
}

// Transactional outbox: every answer commits with the outcome it announces
// or not at all, including a failure recorded in a second transaction;
// answers wait in the outbox while no relay runs (a crash between commit and
// publish) and are published once each by the next relay, a repeated
// answer included.
func TestReserveAndRelease_CommitTheirAnswersWithTheOutcome(t *testing.T) {
	engines := storagetest.Engines(t)
	if len(engines) == 1 {
		t.Run("postgres", func(t *testing.T) { t.Skip("set MERCATO_TEST_POSTGRES to run it") })
	}
	for _, e := range engines {
		t.Run(e.Name, func(t *testing.T) {
			ctx := t.Context()
			url := startBus(t)
			db := storagetest.Open(t, e, migrations.FS)
			crashed := newOutbox(t, db, url, outbox.Config{}) // never relays
			s := adapters.NewStore(db, crashed)
			p := seed(t, s, 5)[0]
			lines := []domain.Line{{ProductID: p.ID, Quantity: 3}}

			// Rolled back after the answer was added: no stock taken, no
			// outcome recorded, no answer left; the same for a failure,
			// recorded in a transaction of its own.
			failing := adapters.NewStore(db, failAfterAdd{crashed})
			if _, err := failing.Reserve(ctx, "order-0", lines, adapters.Answer); !errors.Is(err, errInjected) {
				t.Fatalf("reserve with a failing transaction: %v", err)
			}
			short := []domain.Line{{ProductID: p.ID, Quantity: 6}}
			if _, err := failing.Reserve(ctx, "order-0", short, adapters.Answer); !errors.Is(err, errInjected) {
				t.Fatalf("failed reservation with a failing transaction: %v", err)
			}
			if _, _, err := failing.Release(ctx, "order-0", adapters.Answer); !errors.Is(err, errInjected) {
				t.Fatalf("release with a failing transaction: %v", err)
			}
			if _, err := s.Reservation(ctx, "order-0"); !errors.Is(err, domain.ErrNotFound) {
				t.Fatalf("outcome of rolled back transactions: %v", err)
			}
			if n := available(t, s, p.ID); n != 5 {
				t.Fatalf("available %d after rolled back reservations, want 5", n)
			}
			if n := pending(t, crashed); n != 0 {
				t.Fatalf("%d answers pending after rollbacks, want 0", n)
			}

			// Each committed outcome leaves exactly its answer pending; a
			// repeated command finds its answer still pending and adds nothing.
			steps := []struct {
				name string
				run  func() error
			}{
				{"reserve order-1", func() error { _, err := s.Reserve(ctx, "order-1", lines, adapters.Answer); return err }},
				{"reserve order-1 again", func() error { _, err := s.Reserve(ctx, "order-1", lines, adapters.Answer); return err }},
				{"reserve order-2 out of stock", func() error { _, err := s.Reserve(ctx, "order-2", lines, adapters.Answer); return err }},
				{"release order-3 never reserved", func() error { _, _, err := s.Release(ctx, "order-3", adapters.Answer); return err }},
				{"malformed command for order-4", func() error {
					_, err := app.NewReserveHandler(s, adapters.Answer).Handle(ctx, "order-4", nil)
					return err
				}},
			}
			wantPending := []int{1, 1, 2, 3, 4}
			for i, step := range steps {
				if err := step.run(); err != nil {
					t.Fatalf("%s: %v", step.name, err)
				}
				if n := pending(t, crashed); n != wantPending[i] {
					t.Fatalf("after %s: %d answers pending, want %d", step.name, n, wantPending[i])
				}
			}

			// The restarted process relays what the crashed one committed. An
			// hour's sweep leaves the later answer to the store's wake-up.
			restarted := storagetest.Open(t, e, nil)
			relay := newOutbox(t, restarted, url, outbox.Config{Sweep: time.Hour})
			if err := relay.Start(ctx); err != nil {
				t.Fatal(err)
			}
			client := connect(t, url)
			want := []string{
				"inventory.reserved order-1",
				"inventory.failed order-2",
				"inventory.released order-3",
				"inventory.failed order-4",
			}
			eventually(t, "answers not published", func() bool { return len(answers(t, client)) >= len(want) })
			if got := answers(t, client); !slices.Equal(got, want) {
				t.Fatalf("published %q, want %q", got, want)
			}

			// Answered again once published: the same event id, dropped by the broker.
			if _, err := adapters.NewStore(restarted, relay).Reserve(ctx, "order-1", lines, adapters.Answer); err != nil {
				t.Fatal(err)
			}
			eventually(t, "repeated answer not relayed", func() bool { return pending(t, relay) == 0 })
			if got := answers(t, client); !slices.Equal(got, want) {
				t.Fatalf("published %q after a repeated answer, want %q", got, want)
			}
		})
	}
}

package adapters_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/outbox"
	"github.com/mercato-shop/mercato/platform/outbox/outboxtest"
	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/platform/storage/storagetest"
	"github.com/mercato-shop/mercato/services/customer/adapters"
	"github.com/mercato-shop/mercato/services/customer/domain"
	"github.com/mercato-shop/mercato/services/customer/migrations"
)

func startBus(t *testing.T) string { return outboxtest.StartBus(t, adapters.Stream()) }

func connect(t *testing.T, url string) *bus.Bus { return outboxtest.Connect(t, url, "customer") }

func newOutbox(t *testing.T, db *storage.DB, url string, cfg outbox.Config) *outbox.Outbox {
	return outboxtest.New(t, db, url, "customer", cfg)
}

// newStore returns a store on db whose events go to an outbox that is never
// relayed.
func newStore(t *testing.T, db *storage.DB) *adapters.Store {
	t.Helper()
	return adapters.NewStore(db, newOutbox(t, db, startBus(t), outbox.Config{}))
}

func pending(t *testing.T, o *outbox.Outbox) int { return outboxtest.Pending(t, o) }

func eventually(t *testing.T, what string, cond func() bool) { outboxtest.Eventually(t, what, cond) }

// registered returns the ce-subject (customer id) of every
// customer.registered stored in the customer stream, in stream order.
func registered(t *testing.T, b *bus.Bus) []string {
	var ids []string
	for _, m := range outboxtest.Stored(t, b, adapters.Stream().Name) {
		if id, ok := strings.CutPrefix(m, "customer.registered "); ok {
			ids = append(ids, id)
		}
	}
	return ids
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

// Transactional outbox: customer.registered commits with the customer or
// not at all, waits in the outbox while no relay runs (a crash between
// commit and publish), and is published once by the next relay.
func TestAdd_CommitsTheRegistrationWithTheCustomer(t *testing.T) {
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

			// Rolled back after the event was added: neither the customer nor its event remains.
			lost := newCustomer(t, "lost@example.com")
			err := adapters.NewStore(db, failAfterAdd{crashed}).Add(ctx, lost, adapters.Registered(lost))
			if !errors.Is(err, errInjected) {
				t.Fatalf("add with a failing transaction: %v", err)
			}
			if _, err := s.ByID(ctx, lost.ID()); !errors.Is(err, domain.ErrNotFound) {
				t.Fatalf("customer of a rolled back transaction: %v", err)
			}
			if n := pending(t, crashed); n != 0 {
				t.Fatalf("%d events pending after a rollback, want 0", n)
			}

			ann := newCustomer(t, "ann@example.com")
			if err := s.Add(ctx, ann, adapters.Registered(ann)); err != nil {
				t.Fatal(err)
			}
			if n := pending(t, crashed); n != 1 {
				t.Fatalf("%d events pending after a registration, want 1", n)
			}
			// A taken email rolls back and announces nothing.
			again := newCustomer(t, "ann@example.com")
			if err := s.Add(ctx, again, adapters.Registered(again)); !errors.Is(err, domain.ErrEmailTaken) {
				t.Fatalf("duplicate email: %v", err)
			}
			if n := pending(t, crashed); n != 1 {
				t.Fatalf("%d events pending after a refused registration, want 1", n)
			}

			// The restarted process relays what the crashed one committed. An
			// hour's sweep leaves the later registration to the store's wake-up.
			restarted := storagetest.Open(t, e, nil)
			relay := newOutbox(t, restarted, url, outbox.Config{Sweep: time.Hour})
			if err := relay.Start(ctx); err != nil {
				t.Fatal(err)
			}
			client := connect(t, url)
			eventually(t, "customer.registered of ann not published", func() bool { return len(registered(t, client)) == 1 })
			if got := registered(t, client); got[0] != ann.ID() {
				t.Fatalf("published registration of %s, want %s", got[0], ann.ID())
			}
			if n := pending(t, relay); n != 0 {
				t.Fatalf("%d events pending after the relay ran, want 0", n)
			}

			bob := newCustomer(t, "bob@example.com")
			if err := adapters.NewStore(restarted, relay).Add(ctx, bob, adapters.Registered(bob)); err != nil {
				t.Fatal(err)
			}
			eventually(t, "customer.registered of bob not published", func() bool { return len(registered(t, client)) == 2 })
			if got := registered(t, client); got[0] != ann.ID() || got[1] != bob.ID() {
				t.Fatalf("published registrations %v, want [%s %s] once each", got, ann.ID(), bob.ID())
			}
		})
	}
}

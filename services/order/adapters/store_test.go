package adapters_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mercato-shop/mercato/platform/eventstore"
	"github.com/mercato-shop/mercato/platform/inbox"
	"github.com/mercato-shop/mercato/platform/outbox"
	"github.com/mercato-shop/mercato/platform/outbox/outboxtest"
	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/platform/storage/storagetest"
	"github.com/mercato-shop/mercato/services/order/adapters"
	"github.com/mercato-shop/mercato/services/order/app"
	"github.com/mercato-shop/mercato/services/order/domain"
	"github.com/mercato-shop/mercato/services/order/migrations"
)

// newStore returns a store whose outbox is not relayed: what a change sends
// stays pending, where a test can count it.
func newStore(t *testing.T, db *storage.DB) (*adapters.Store, *outbox.Outbox) {
	t.Helper()
	ob := outboxtest.New(t, db, outboxtest.StartBus(t), "order", outbox.Config{})
	in := inbox.New(db, "")
	if err := in.EnsureSchema(context.Background()); err != nil {
		t.Fatal(err)
	}
	return newStoreWith(t, db, ob, in, 0), ob
}

// newStoreWith returns a store over events snapshotted every snapshotEvery
// (0: never) whose orders ship a minute after confirmation.
func newStoreWith(t *testing.T, db *storage.DB, ob *outbox.Outbox, in *inbox.Inbox, snapshotEvery int64) *adapters.Store {
	t.Helper()
	es, err := eventstore.New(db, eventstore.Config{SnapshotEvery: snapshotEvery, Upcasters: adapters.Upcasters()})
	if err != nil {
		t.Fatal(err)
	}
	if err := es.EnsureSchema(context.Background()); err != nil {
		t.Fatal(err)
	}
	return adapters.NewStore(db, es, ob, in, time.Minute)
}

func pending(t *testing.T, ob *outbox.Outbox) int { return outboxtest.Pending(t, ob) }

func newOrder(t *testing.T, customer string) (*domain.Order, *domain.Saga) {
	t.Helper()
	o, err := domain.NewOrder(customer, []domain.Line{
		{ProductID: uuid.Must(uuid.NewV7()).String(), Name: "Mug", Quantity: 2, UnitPrice: domain.Money{Amount: 1450, Currency: "EUR"}},
	}, domain.Orchestrated, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return o, domain.NewSaga(o, "tok_ok", time.Now(), time.Minute)
}

func TestStore_CreateAndRead(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _ := newStore(t, db)
		o, saga := newOrder(t, "c1")
		if existing, err := s.Create(ctx, o, saga, nil); err != nil || existing != "" {
			t.Fatalf("create: %q %v", existing, err)
		}
		got, err := s.Order(ctx, o.ID())
		if err != nil {
			t.Fatal(err)
		}
		if got.CustomerID() != "c1" || got.Status() != domain.Pending || got.Total() != o.Total() ||
			len(got.Lines()) != 1 || got.Lines()[0] != o.Lines()[0] || got.Version() != 1 || got.Saga() != domain.Orchestrated {
			t.Fatalf("read back %+v", got)
		}
		if _, err := s.Order(ctx, uuid.NewString()); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("unknown order: %v", err)
		}
	})
}

func TestStore_IdempotencyKey(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _ := newStore(t, db)
		key := &app.IdempotencyKey{Key: "k1", RequestHash: "h1"}

		// Ten concurrent retries of one request make one order.
		ids := make([]string, 10)
		var wg sync.WaitGroup
		for i := range ids {
			wg.Go(func() {
				o, saga := newOrder(t, "c1")
				existing, err := s.Create(ctx, o, saga, key)
				if err != nil {
					t.Error(err)
				}
				ids[i] = o.ID()
				if existing != "" {
					ids[i] = existing
				}
			})
		}
		wg.Wait()
		for _, id := range ids[1:] {
			if id != ids[0] {
				t.Fatalf("one key made several orders: %v", ids)
			}
		}
		o, saga := newOrder(t, "c1")
		if _, err := s.Create(ctx, o, saga, &app.IdempotencyKey{Key: "k1", RequestHash: "other"}); !errors.Is(err, domain.ErrIdempotencyMismatch) {
			t.Fatalf("same key, other request: %v", err)
		}
		// Keys are per customer.
		o2, saga2 := newOrder(t, "c2")
		if existing, err := s.Create(ctx, o2, saga2, key); err != nil || existing != "" {
			t.Fatalf("another customer's key: %q %v", existing, err)
		}
	})
}

func TestStore_UpdateAdvancesTheSagaOnceUnderDuplicateReplies(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _ := newStore(t, db)
		o, saga := newOrder(t, "c1")
		if _, err := s.Create(ctx, o, saga, nil); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				err := s.Update(ctx, o.ID(), nil, func(o *domain.Order, saga *domain.Saga) ([]domain.Command, error) {
					cmds, _, err := saga.Handle(o, domain.Reply{Kind: domain.StockReserved}, time.Now(), time.Minute)
					return cmds, err
				})
				if err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		// Eight deliveries of one reply: the guarded update let one move the
		// saga; the others saw CHARGING on retry and changed nothing.
		var step string
		var attempts int
		if err := db.QueryRowContext(ctx, `SELECT step, attempts FROM sagas WHERE order_id = $1`, o.ID()).Scan(&step, &attempts); err != nil {
			t.Fatal(err)
		}
		if step != string(domain.Charging) || attempts != 0 {
			t.Fatalf("step %s attempts %d", step, attempts)
		}
		err := s.Update(ctx, o.ID(), nil, func(o *domain.Order, saga *domain.Saga) ([]domain.Command, error) {
			cmds, _, err := saga.Handle(o, domain.Reply{Kind: domain.PaymentCompleted}, time.Now(), time.Minute)
			return cmds, err
		})
		if err != nil {
			t.Fatal(err)
		}
		got, _ := s.Order(ctx, o.ID())
		if got.Status() != domain.Confirmed || got.Version() != 2 {
			t.Fatalf("confirmed order: %s v%d", got.Status(), got.Version())
		}
	})
}

func TestStore_StaleSagas(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _ := newStore(t, db)
		inFlight, saga := newOrder(t, "c1")
		if _, err := s.Create(ctx, inFlight, saga, nil); err != nil {
			t.Fatal(err)
		}
		done, saga2 := newOrder(t, "c1")
		if _, err := s.Create(ctx, done, saga2, nil); err != nil {
			t.Fatal(err)
		}
		if err := s.Update(ctx, done.ID(), nil, func(o *domain.Order, saga *domain.Saga) ([]domain.Command, error) {
			cmds, _, err := saga.Handle(o, domain.Reply{Kind: domain.StockFailed}, time.Now(), time.Minute)
			return cmds, err
		}); err != nil {
			t.Fatal(err)
		}
		ids, err := s.StaleSagas(ctx, time.Now().Add(time.Second), 10)
		if err != nil || len(ids) != 1 || ids[0] != inFlight.ID() {
			t.Fatalf("stale: %v %v", ids, err)
		}
		if ids, _ := s.StaleSagas(ctx, time.Now().Add(-time.Hour), 10); len(ids) != 0 {
			t.Fatalf("a saga that moved recently is not stale: %v", ids)
		}
	})
}

func TestStore_ExpiredSagas(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _ := newStore(t, db)
		o, saga := newOrder(t, "c1") // reserving, deadline in a minute
		if _, err := s.Create(ctx, o, saga, nil); err != nil {
			t.Fatal(err)
		}
		if ids, _ := s.ExpiredSagas(ctx, time.Now(), 10); len(ids) != 0 {
			t.Fatalf("expired before the deadline: %v", ids)
		}
		ids, err := s.ExpiredSagas(ctx, time.Now().Add(2*time.Minute), 10)
		if err != nil || len(ids) != 1 || ids[0] != o.ID() {
			t.Fatalf("expired: %v %v", ids, err)
		}
		// Compensating steps have no deadline.
		if err := s.Update(ctx, o.ID(), nil, func(o *domain.Order, saga *domain.Saga) ([]domain.Command, error) {
			cmds, _, err := saga.Cancel(o, time.Now())
			return cmds, err
		}); err != nil {
			t.Fatal(err)
		}
		if ids, _ := s.ExpiredSagas(ctx, time.Now().Add(time.Hour), 10); len(ids) != 0 {
			t.Fatalf("a compensating saga expired: %v", ids)
		}
	})
}

// Transactional outbox: an order is stored with its announcement and the
// saga's first command, a saga step with its next command and the order's
// event, and nothing is written when the change fails.
func TestStore_WritesWhatAChangeSendsInItsTransaction(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, ob := newStore(t, db)
		o, saga := newOrder(t, "c1")
		if _, err := s.Create(ctx, o, saga, &app.IdempotencyKey{Key: "k", RequestHash: "h"}); err != nil {
			t.Fatal(err)
		}
		if n := pending(t, ob); n != 2 { // order.created, inventory.cmd.reserve
			t.Fatalf("%d events pending after create, want 2", n)
		}
		again, saga2 := newOrder(t, "c1")
		if _, err := s.Create(ctx, again, saga2, &app.IdempotencyKey{Key: "k", RequestHash: "h"}); err != nil {
			t.Fatal(err)
		}
		if n := pending(t, ob); n != 2 {
			t.Fatalf("a replayed request wrote events: %d pending", n)
		}

		boom := errors.New("boom")
		err := s.Update(ctx, o.ID(), nil, func(o *domain.Order, saga *domain.Saga) ([]domain.Command, error) {
			cmds, _, _ := saga.Handle(o, domain.Reply{Kind: domain.StockReserved}, time.Now(), time.Minute)
			return cmds, boom
		})
		if !errors.Is(err, boom) || pending(t, ob) != 2 {
			t.Fatalf("a failed change: err %v, %d pending", err, pending(t, ob))
		}

		reply := func(kind domain.ReplyKind, msgID string) {
			t.Helper()
			err := s.Update(ctx, o.ID(), &app.Claim{Consumer: "order-saga", MessageID: msgID}, func(o *domain.Order, saga *domain.Saga) ([]domain.Command, error) {
				cmds, _, err := saga.Handle(o, domain.Reply{Kind: kind}, time.Now(), time.Minute)
				return cmds, err
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		reply(domain.StockReserved, "m1")
		if n := pending(t, ob); n != 3 { // + payment.cmd.charge
			t.Fatalf("%d pending after the reservation, want 3", n)
		}
		reply(domain.PaymentCompleted, "m2")
		reply(domain.PaymentCompleted, "m2") // redelivered: the inbox skips it
		if n := pending(t, ob); n != 4 {     // + order.confirmed
			t.Fatalf("%d pending after the payment, want 4", n)
		}
		got, _ := s.Order(ctx, o.ID())
		if got.Status() != domain.Confirmed {
			t.Fatalf("order %s", got.Status())
		}
	})
}

package adapters_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/platform/storage/storagetest"
	"github.com/mercato-shop/mercato/services/payment/adapters"
	"github.com/mercato-shop/mercato/services/payment/domain"
	"github.com/mercato-shop/mercato/services/payment/migrations"
)

func newPayment(t *testing.T, orderID string, amount int64) *domain.Payment {
	t.Helper()
	p, err := domain.NewPayment(orderID, "customer-1", domain.Money{Amount: amount, Currency: "EUR"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// newStore returns a store on db whose events go through a real outbox to
// an embedded broker.
func newStore(t *testing.T, db *storage.DB) *adapters.Store {
	t.Helper()
	return adapters.NewStore(db, newOutbox(t, db, connect(t, broker(t))))
}

func TestStore_GetOrCreateKeepsOnePaymentPerOrder(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newStore(t, db)
		order := uuid.NewString()

		first := newPayment(t, order, 1234)
		got, err := s.GetOrCreate(ctx, first)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID() != first.ID() || got.Status() != domain.Pending || got.Amount() != first.Amount() ||
			got.CustomerID() != "customer-1" || !got.CreatedAt().Equal(first.CreatedAt().Truncate(time.Microsecond)) {
			t.Fatalf("stored %+v, want %+v", got, first)
		}
		again, err := s.GetOrCreate(ctx, newPayment(t, order, 999))
		if err != nil || again.ID() != first.ID() || again.Amount().Amount != 1234 {
			t.Fatalf("second create: %+v %v, want the first payment", again, err)
		}

		// Many deliveries at once: one payment, and all of them see it.
		other := uuid.NewString()
		candidates := make([]*domain.Payment, 20)
		for i := range candidates {
			candidates[i] = newPayment(t, other, 500)
		}
		ids := make([]string, len(candidates))
		var wg sync.WaitGroup
		for i := range ids {
			wg.Go(func() {
				p, err := s.GetOrCreate(ctx, candidates[i])
				if err != nil {
					t.Error(err)
					return
				}
				ids[i] = p.ID()
			})
		}
		wg.Wait()
		for _, id := range ids {
			if id != ids[0] {
				t.Fatalf("concurrent creates saw different payments: %v", ids)
			}
		}

		// A refund first leaves a tombstone that a later charge finds.
		late := uuid.NewString()
		if _, err := s.GetOrCreate(ctx, domain.NewVoided(late, time.Now())); err != nil {
			t.Fatal(err)
		}
		if p, err := s.GetOrCreate(ctx, newPayment(t, late, 100)); err != nil || p.Status() != domain.Voided || p.Reason() != domain.ReasonVoided {
			t.Fatalf("charge after void: %+v %v", p, err)
		}
	})
}

func TestStore_UpdateOnlyFromTheExpectedStatus(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newStore(t, db)
		p, err := s.GetOrCreate(ctx, newPayment(t, uuid.NewString(), 1000))
		if err != nil {
			t.Fatal(err)
		}

		// Concurrent settlements of one PENDING payment: exactly one is stored.
		// Each delivery loaded the payment while it was PENDING.
		copies := make([]*domain.Payment, 10)
		for i := range copies {
			if copies[i], err = s.ByID(ctx, p.ID()); err != nil {
				t.Fatal(err)
			}
			if err := copies[i].Capture(fmt.Sprintf("ch_%d", i), time.Now()); err != nil {
				t.Fatal(err)
			}
		}
		won := make([]bool, len(copies))
		var wg sync.WaitGroup
		for i, c := range copies {
			wg.Go(func() {
				var err error
				if won[i], err = s.Update(ctx, c, domain.Pending); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		winner := -1
		for i, w := range won {
			if w {
				if winner >= 0 {
					t.Fatalf("updates %d and %d both won", winner, i)
				}
				winner = i
			}
		}
		if winner < 0 {
			t.Fatal("no update won")
		}
		stored, err := s.ByOrder(ctx, p.OrderID())
		if err != nil || stored.Status() != domain.Captured || stored.ChargeID() != fmt.Sprintf("ch_%d", winner) {
			t.Fatalf("stored %+v %v, want captured by ch_%d", stored, err, winner)
		}

		if err := stored.Refund("re_1", time.Now()); err != nil {
			t.Fatal(err)
		}
		if ok, err := s.Update(ctx, stored, domain.Pending); err != nil || ok {
			t.Fatalf("update from a status the row no longer has: %v %v", ok, err)
		}
		if ok, err := s.Update(ctx, stored, domain.Captured); err != nil || !ok {
			t.Fatalf("refund: %v %v", ok, err)
		}
		got, err := s.ByID(ctx, p.ID())
		if err != nil || got.Status() != domain.Refunded || got.RefundID() != "re_1" || got.ChargeID() != stored.ChargeID() ||
			!got.UpdatedAt().Equal(stored.UpdatedAt().Truncate(time.Microsecond)) {
			t.Fatalf("after refund %+v %v", got, err)
		}
	})
}

func TestStore_Reads(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newStore(t, db)
		if _, err := s.ByID(ctx, uuid.NewString()); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("unknown id: %v", err)
		}
		if _, err := s.ByOrder(ctx, uuid.NewString()); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("unknown order: %v", err)
		}
		if ps, err := s.ListByOrder(ctx, uuid.NewString()); err != nil || ps == nil || len(ps) != 0 {
			t.Fatalf("list of unknown order: %v %v", ps, err)
		}
		p, err := s.GetOrCreate(ctx, newPayment(t, uuid.NewString(), 42))
		if err != nil {
			t.Fatal(err)
		}
		if ps, err := s.ListByOrder(ctx, p.OrderID()); err != nil || len(ps) != 1 || ps[0].ID() != p.ID() {
			t.Fatalf("list: %v %v", ps, err)
		}
	})
}

// A payment may be failed without the provider's answer only while no
// charge of it was marked sent; marking a settled payment reports it.
func TestStore_UpdateUnsentOnlyBeforeAChargeWasMarkedSent(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newStore(t, db)
		decline := func(p *domain.Payment) *domain.Payment {
			t.Helper()
			if err := p.Decline(domain.ReasonProviderUnavailable, "", time.Now()); err != nil {
				t.Fatal(err)
			}
			return p
		}

		unsent, err := s.GetOrCreate(ctx, newPayment(t, uuid.NewString(), 1000))
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := s.UpdateUnsent(ctx, decline(unsent)); err != nil || !ok {
			t.Fatalf("fail an unsent payment: %v %v", ok, err)
		}
		if pending, err := s.MarkSent(ctx, unsent); err != nil || pending {
			t.Fatalf("mark a settled payment sent: pending %v %v", pending, err)
		}

		sent, err := s.GetOrCreate(ctx, newPayment(t, uuid.NewString(), 1000))
		if err != nil {
			t.Fatal(err)
		}
		if pending, err := s.MarkSent(ctx, sent); err != nil || !pending {
			t.Fatalf("mark sent: pending %v %v", pending, err)
		}
		if ok, err := s.UpdateUnsent(ctx, decline(sent)); err != nil || ok {
			t.Fatalf("failed a payment marked sent: %v %v", ok, err)
		}
		if got, err := s.ByID(ctx, sent.ID()); err != nil || got.Status() != domain.Pending {
			t.Fatalf("payment marked sent %+v %v, want PENDING", got, err)
		}
		if ok, err := s.Update(ctx, sent, domain.Pending); err != nil || !ok {
			t.Fatalf("the provider's answer still settles it: %v %v", ok, err)
		}
	})
}

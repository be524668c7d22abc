package adapters_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/platform/storage/storagetest"
	"github.com/mercato-shop/mercato/services/inventory/adapters"
	"github.com/mercato-shop/mercato/services/inventory/domain"
	"github.com/mercato-shop/mercato/services/inventory/migrations"
)

func seed(t *testing.T, s *adapters.Store, stock ...int64) []domain.Product {
	t.Helper()
	var ps []domain.Product
	for i, n := range stock {
		ps = append(ps, domain.Product{
			ID: uuid.Must(uuid.NewV7()).String(), SKU: fmt.Sprintf("SKU-%d", i), Name: fmt.Sprintf("Product %d", i),
			Price: domain.Money{Amount: 1000 + int64(i), Currency: "EUR"}, Available: n,
		})
	}
	if ok, err := s.Seed(context.Background(), ps); err != nil || !ok {
		t.Fatalf("seed: %v %v", ok, err)
	}
	return ps
}

func available(t *testing.T, s *adapters.Store, id string) int64 {
	t.Helper()
	p, err := s.Product(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return p.Available
}

func TestReserve_NeverOversellsUnderConcurrency(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		s := newStore(t, db)
		p := seed(t, s, 10)[0]

		const orders = 50
		results := make([]domain.Reservation, orders)
		errs := make([]error, orders)
		var wg sync.WaitGroup
		for i := range orders {
			wg.Go(func() {
				results[i], errs[i] = s.Reserve(context.Background(), uuid.Must(uuid.NewV7()).String(), []domain.Line{{ProductID: p.ID, Quantity: 1}}, adapters.Answer)
			})
		}
		wg.Wait()
		held := 0
		for i, r := range results {
			if errs[i] != nil {
				t.Fatalf("reservation %d: %v", i, errs[i])
			}
			switch {
			case r.Status == domain.Held:
				held++
			case r.Status != domain.Failed || r.Reason != domain.ReasonOutOfStock:
				t.Fatalf("reservation %d: %+v", i, r)
			}
		}
		if held != 10 {
			t.Fatalf("%d reservations held stock, want exactly 10", held)
		}
		if n := available(t, s, p.ID); n != 0 {
			t.Fatalf("available %d, want 0", n)
		}
	})
}

func TestReserve_IsAllOrNothingAndIdempotent(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newStore(t, db)
		ps := seed(t, s, 5, 2)
		a, b := ps[0].ID, ps[1].ID

		// b is short: nothing is taken from a either.
		res, err := s.Reserve(ctx, "order-1", []domain.Line{{ProductID: a, Quantity: 3}, {ProductID: b, Quantity: 3}}, adapters.Answer)
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != domain.Failed || res.Reason != domain.ReasonOutOfStock || res.ProductID != b {
			t.Fatalf("short order: %+v", res)
		}
		if available(t, s, a) != 5 || available(t, s, b) != 2 {
			t.Fatal("a failed reservation took stock")
		}

		lines := []domain.Line{{ProductID: a, Quantity: 3}, {ProductID: b, Quantity: 2}}
		for range 3 { // a redelivered command
			res, err = s.Reserve(ctx, "order-2", lines, adapters.Answer)
			if err != nil || res.Status != domain.Held || len(res.Lines) != 2 {
				t.Fatalf("reserve: %+v %v", res, err)
			}
		}
		if available(t, s, a) != 2 || available(t, s, b) != 0 {
			t.Fatalf("stock after one reservation repeated: a=%d b=%d", available(t, s, a), available(t, s, b))
		}

		res, err = s.Reserve(ctx, "order-3", []domain.Line{{ProductID: uuid.Must(uuid.NewV7()).String(), Quantity: 1}}, adapters.Answer)
		if err != nil || res.Status != domain.Failed || res.Reason != domain.ReasonUnknownProduct {
			t.Fatalf("unknown product: %+v %v", res, err)
		}
	})
}

func TestRelease_GivesStockBackOnce(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newStore(t, db)
		p := seed(t, s, 10)[0]
		if _, err := s.Reserve(ctx, "order-1", []domain.Line{{ProductID: p.ID, Quantity: 4}}, adapters.Answer); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		released := make([]bool, 5)
		for i := range released {
			wg.Go(func() {
				var err error
				if _, released[i], err = s.Release(ctx, "order-1", adapters.Answer); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		n := 0
		for _, r := range released {
			if r {
				n++
			}
		}
		if n != 1 || available(t, s, p.ID) != 10 {
			t.Fatalf("%d releases gave stock back; available %d, want 1 and 10", n, available(t, s, p.ID))
		}
		// A reservation arriving after the release must not take stock.
		res, err := s.Reserve(ctx, "order-1", []domain.Line{{ProductID: p.ID, Quantity: 4}}, adapters.Answer)
		if err != nil || res.Status != domain.Released || available(t, s, p.ID) != 10 {
			t.Fatalf("reserve after release: %+v %v, available %d", res, err, available(t, s, p.ID))
		}
	})
}

func TestRelease_BeforeReserveBlocksTheLateReservation(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newStore(t, db)
		p := seed(t, s, 10)[0]
		res, released, err := s.Release(ctx, "order-9", adapters.Answer)
		if err != nil || released || res.Status != domain.Released {
			t.Fatalf("release of an unknown order: %+v %v %v", res, released, err)
		}
		res, err = s.Reserve(ctx, "order-9", []domain.Line{{ProductID: p.ID, Quantity: 1}}, adapters.Answer)
		if err != nil || res.Status == domain.Held || available(t, s, p.ID) != 10 {
			t.Fatalf("late reservation: %+v %v", res, err)
		}
	})
}

func TestCatalog_QueriesAndSeedOnce(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newStore(t, db)
		catalog := adapters.Catalog()
		if ok, err := s.Seed(ctx, catalog); err != nil || !ok {
			t.Fatal(ok, err)
		}
		if ok, err := s.Seed(ctx, adapters.Catalog()); err != nil || ok {
			t.Fatalf("second seed must do nothing: %v %v", ok, err)
		}
		all, err := s.Products(ctx)
		if err != nil || len(all) != len(catalog) {
			t.Fatalf("%d products, %v", len(all), err)
		}
		some, err := s.Products(ctx, catalog[0].ID, catalog[1].ID, "missing")
		if err != nil || len(some) != 2 {
			t.Fatalf("by ids: %d %v", len(some), err)
		}
		if _, err := s.Product(ctx, "missing"); err != domain.ErrNotFound {
			t.Fatalf("missing product: %v", err)
		}
	})
}

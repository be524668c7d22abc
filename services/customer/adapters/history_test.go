package adapters_test

import (
	"context"
	"encoding/binary"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/platform/storage/storagetest"
	"github.com/mercato-shop/mercato/services/customer/adapters"
	"github.com/mercato-shop/mercato/services/customer/domain"
	"github.com/mercato-shop/mercato/services/customer/migrations"
)

// base is a time a while ago, at the database's precision.
var base = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)

// orderID returns a UUIDv7 that carries the time at, as the order
// context's ids carry their order's creation time.
func orderID(at time.Time) string {
	id := uuid.Must(uuid.NewV7())
	var ms [8]byte
	binary.BigEndian.PutUint64(ms[:], uint64(at.UnixMilli()))
	copy(id[:6], ms[2:])
	return id.String()
}

func customerID() string { return uuid.Must(uuid.NewV7()).String() }

var eur = func(amount int64) domain.Money { return domain.Money{Amount: amount, Currency: "EUR"} }

func placed(t *testing.T, id, customer string, total, items, version int64, at time.Time) domain.OrderEvent {
	t.Helper()
	e, err := domain.OrderPlaced(id, customer, eur(total), items, version, at)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func changed(t *testing.T, id, customer string, status domain.OrderStatus, reason string, version int64, at time.Time) domain.OrderEvent {
	t.Helper()
	e, err := domain.OrderChanged(id, customer, status, reason, version, at)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func record(t *testing.T, s *adapters.Store, events ...domain.OrderEvent) {
	t.Helper()
	for _, e := range events {
		if err := s.RecordOrderEvent(t.Context(), e); err != nil {
			t.Fatal(err)
		}
	}
}

func history(t *testing.T, s *adapters.Store, customer string) []domain.OrderSummary {
	t.Helper()
	got, err := s.RecentOrders(t.Context(), customer, 100)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// only returns the single order of the customer's history.
func only(t *testing.T, s *adapters.Store, customer string) domain.OrderSummary {
	t.Helper()
	got := history(t, s, customer)
	if len(got) != 1 {
		t.Fatalf("history %+v, want one order", got)
	}
	return got[0]
}

func summary(id string, status domain.OrderStatus, reason string, total, items int64, created, updated time.Time) domain.OrderSummary {
	return domain.OrderSummary{ID: id, Status: status, Reason: reason, Total: eur(total), ItemCount: items, CreatedAt: created, UpdatedAt: updated}
}

// rowsOf counts the customer's rows, those RecentOrders leaves out included.
func rowsOf(t *testing.T, db *storage.DB, customer string) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM order_history WHERE customer_id = $1`, customer).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestOrderHistory_AppliesOnlyNewerEventsOfAnOrder(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		s := adapters.NewStore(db, nil)
		ann := customerID()
		if got := history(t, s, ann); got == nil || len(got) != 0 {
			t.Fatalf("history without orders %#v, want an empty list", got)
		}
		id := orderID(base)
		record(t, s, placed(t, id, ann, 2900, 3, 1, base))
		if got, want := only(t, s, ann), summary(id, domain.OrderPending, "", 2900, 3, base, base); got != want {
			t.Fatalf("created: %+v, want %+v", got, want)
		}
		confirmed := base.Add(time.Minute)
		record(t, s, changed(t, id, ann, domain.OrderConfirmed, "", 2, confirmed))
		want := summary(id, domain.OrderConfirmed, "", 2900, 3, base, confirmed)
		if got := only(t, s, ann); got != want {
			t.Fatalf("confirmed: %+v, want %+v", got, want)
		}
		// Redeliveries, later in time but not newer in the order's life.
		record(t, s,
			changed(t, id, ann, domain.OrderConfirmed, "", 2, base.Add(5*time.Minute)),
			placed(t, id, ann, 2900, 3, 1, base.Add(6*time.Minute)))
		if got := only(t, s, ann); got != want {
			t.Fatalf("after duplicates: %+v, want %+v", got, want)
		}
		shipped := base.Add(2 * time.Minute)
		record(t, s, changed(t, id, ann, domain.OrderShipped, "", 3, shipped))
		want = summary(id, domain.OrderShipped, "", 2900, 3, base, shipped)
		if got := only(t, s, ann); got != want {
			t.Fatalf("shipped: %+v, want %+v", got, want)
		}
		// An overtaken confirmation comes in late: the order stays shipped.
		record(t, s, changed(t, id, ann, domain.OrderConfirmed, "", 2, base.Add(7*time.Minute)))
		if got := only(t, s, ann); got != want {
			t.Fatalf("after a late confirmation: %+v, want %+v", got, want)
		}
	})
}

func TestOrderHistory_KeepsWhatArrivesBeforeOrderCreated(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		s := adapters.NewStore(db, nil)
		ann := customerID()
		id := orderID(base)
		cancelled := base.Add(time.Minute)
		record(t, s, changed(t, id, ann, domain.OrderCancelled, "payment_declined", 2, cancelled))
		// Kept, but not shown while its total and items are unknown.
		if got := history(t, s, ann); len(got) != 0 {
			t.Fatalf("history before order.created %+v, want none shown", got)
		}
		if n := rowsOf(t, db, ann); n != 1 {
			t.Fatalf("%d rows before order.created, want the cancellation kept", n)
		}
		record(t, s, placed(t, id, ann, 1450, 1, 1, base))
		want := summary(id, domain.OrderCancelled, "payment_declined", 1450, 1, base, cancelled)
		if got := only(t, s, ann); got != want {
			t.Fatalf("after a late order.created: %+v, want %+v", got, want)
		}
	})
}

// Every order of events of every path through the lifecycle, each event
// delivered twice, ends in the path's last status with order.created's
// details; with versions, and without them (events published before orders
// had versions).
func TestOrderHistory_AnyDeliveryOrderEndsInTheLastStatus(t *testing.T) {
	type step struct {
		status  domain.OrderStatus
		reason  string
		version int64
	}
	paths := map[string][]step{
		"shipped":                 {{domain.OrderPending, "", 1}, {domain.OrderConfirmed, "", 2}, {domain.OrderShipped, "", 3}},
		"declined":                {{domain.OrderPending, "", 1}, {domain.OrderCancelled, "payment_declined", 2}},
		"cancelled after confirm": {{domain.OrderPending, "", 1}, {domain.OrderConfirmed, "", 2}, {domain.OrderCancelled, "customer_cancelled", 3}},
	}
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		s := adapters.NewStore(db, nil)
		for name, path := range paths {
			for _, versioned := range []bool{true, false} {
				for _, perm := range permutations(len(path)) {
					ann, id := customerID(), orderID(base)
					var events []domain.OrderEvent
					for _, i := range perm {
						st, at := path[i], base.Add(time.Duration(i)*time.Minute)
						v := st.version
						if !versioned {
							v = 0
						}
						if st.status == domain.OrderPending {
							events = append(events, placed(t, id, ann, 990, 4, v, at))
						} else {
							events = append(events, changed(t, id, ann, st.status, st.reason, v, at))
						}
					}
					record(t, s, events...)
					record(t, s, events...)
					last := path[len(path)-1]
					want := summary(id, last.status, last.reason, 990, 4, base, base.Add(time.Duration(len(path)-1)*time.Minute))
					if got := only(t, s, ann); got != want {
						t.Errorf("%s, versioned %v, delivered in order %v: %+v, want %+v", name, versioned, perm, got, want)
					}
				}
			}
		}
	})
}

// permutations returns every order of 0..n-1.
func permutations(n int) [][]int {
	if n == 0 {
		return [][]int{{}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			out = append(out, slices.Insert(slices.Clone(p), i, n-1))
		}
	}
	return out
}

func TestOrderHistory_KeepsTheTwentyMostRecentOrdersPerCustomer(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		s := adapters.NewStore(db, nil)
		ann, bob := customerID(), customerID()
		ids := make([]string, 25)
		for i := range ids {
			at := base.Add(time.Duration(i) * time.Minute)
			ids[i] = orderID(at)
			record(t, s, placed(t, ids[i], ann, 100, 1, 1, at), changed(t, ids[i], ann, domain.OrderConfirmed, "", 2, at.Add(time.Second)))
		}
		bobs := orderID(base)
		record(t, s, placed(t, bobs, bob, 100, 1, 1, base))

		newest := func() []string {
			var got []string
			for _, o := range history(t, s, ann) {
				got = append(got, o.ID)
			}
			return got
		}
		want := slices.Clone(ids[5:])
		slices.Reverse(want)
		if got := newest(); !slices.Equal(got, want) {
			t.Fatalf("ann's history %v, want the 20 newest first %v", got, want)
		}
		if n := rowsOf(t, db, ann); n != adapters.HistoryLimit {
			t.Fatalf("%d rows of ann, want %d", n, adapters.HistoryLimit)
		}
		if got := history(t, s, bob); len(got) != 1 || got[0].ID != bobs {
			t.Fatalf("bob's history %+v: pruning ann's touched it", got)
		}
		// Pruned orders heard of again stay out.
		record(t, s,
			changed(t, ids[0], ann, domain.OrderShipped, "", 3, base.Add(time.Hour)),
			placed(t, ids[1], ann, 100, 1, 1, base.Add(time.Minute)))
		if got := newest(); !slices.Equal(got, want) {
			t.Fatalf("after late events of pruned orders: %v, want %v", got, want)
		}
		if n := rowsOf(t, db, ann); n != adapters.HistoryLimit {
			t.Fatalf("%d rows of ann after late events of pruned orders, want %d", n, adapters.HistoryLimit)
		}
	})
}

// Deliveries handled at once (as the consumer does) never take an order
// back nor leave more than HistoryLimit orders.
func TestOrderHistory_ConcurrentDeliveriesNeverRegressNorOverfill(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		s := adapters.NewStore(db, nil)
		ann := customerID()
		ids := make([]string, 30)
		var created, later []domain.OrderEvent
		for i := range ids {
			at := base.Add(time.Duration(i) * time.Minute)
			ids[i] = orderID(at)
			created = append(created, placed(t, ids[i], ann, 100, 2, 1, at))
			for range 2 {
				later = append(later,
					changed(t, ids[i], ann, domain.OrderConfirmed, "", 2, at.Add(time.Second)),
					changed(t, ids[i], ann, domain.OrderShipped, "", 3, at.Add(2*time.Second)))
			}
		}
		check := func(what string, status domain.OrderStatus, updated time.Duration) {
			t.Helper()
			got := history(t, s, ann)
			if n := rowsOf(t, db, ann); n != adapters.HistoryLimit || len(got) != adapters.HistoryLimit {
				t.Fatalf("%s: %d rows, %d shown, want %d", what, n, len(got), adapters.HistoryLimit)
			}
			for i, o := range got {
				at := base.Add(time.Duration(len(ids)-1-i) * time.Minute)
				want := summary(ids[len(ids)-1-i], status, "", 100, 2, at, at.Add(updated))
				if o != want {
					t.Fatalf("%s: order %d is %+v, want %+v", what, i, o, want)
				}
			}
		}
		// New orders at once: each prune must count the others' orders.
		recordConcurrently(t, s, created)
		check("orders created at once", domain.OrderPending, 0)
		// Later events twice and newest first, overtaking each other.
		slices.Reverse(later)
		recordConcurrently(t, s, later)
		check("orders shipped at once", domain.OrderShipped, 2*time.Second)
	})
}

// recordConcurrently records events from concurrent goroutines, a few at a
// time, as the consumer handles deliveries.
func recordConcurrently(t *testing.T, s *adapters.Store, events []domain.OrderEvent) {
	t.Helper()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		errs  []error
		slots = make(chan struct{}, 8)
	)
	for _, e := range events {
		wg.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			if err := s.RecordOrderEvent(context.Background(), e); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d deliveries failed, first: %v", len(errs), len(events), errs[0])
	}
}

func TestOrderHistory_RecentOrdersHonoursTheLimit(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		s := adapters.NewStore(db, nil)
		ann := customerID()
		for i := range 7 {
			at := base.Add(time.Duration(i) * time.Hour)
			record(t, s, placed(t, orderID(at), ann, int64(i+1), 1, 1, at))
		}
		got, err := s.RecentOrders(t.Context(), ann, 5)
		if err != nil {
			t.Fatal(err)
		}
		var totals []int64
		for _, o := range got {
			totals = append(totals, o.Total.Amount)
		}
		if want := []int64{7, 6, 5, 4, 3}; !slices.Equal(totals, want) {
			t.Fatalf("the 5 most recent, by total: %v, want %v", totals, want)
		}
	})
}

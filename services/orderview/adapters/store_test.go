package adapters_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	moneyv1 "github.com/mercato-shop/mercato/api/gen/money/v1"
	orderv1 "github.com/mercato-shop/mercato/api/gen/order/v1"
	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/platform/storage/storagetest"
	"github.com/mercato-shop/mercato/services/orderview/adapters"
	"github.com/mercato-shop/mercato/services/orderview/app"
	"github.com/mercato-shop/mercato/services/orderview/domain"
	"github.com/mercato-shop/mercato/services/orderview/migrations"
	ovt "github.com/mercato-shop/mercato/services/orderview/orderviewtest"
)

var t0 = time.Date(2030, 5, 6, 7, 40, 0, 0, time.UTC)

// feed applies events to a projection the way its runner does: one stream
// at a time, each record at the next sequence of its stream.
type feed struct {
	t    *testing.T
	db   *storage.DB
	cps  *adapters.Checkpoints
	p    adapters.Projection
	seqs map[string]uint64
}

func newFeed(t *testing.T, db *storage.DB, p adapters.Projection) *feed {
	t.Helper()
	cps := adapters.NewCheckpoints(db, slog.New(slog.DiscardHandler))
	if err := cps.Register(t.Context(), p.Name()); err != nil {
		t.Fatal(err)
	}
	return &feed{t: t, db: db, cps: cps, p: p, seqs: map[string]uint64{}}
}

// publish applies events, each alone in its batch, at the next sequence of
// its stream.
func (f *feed) publish(events ...bus.Event) {
	f.t.Helper()
	for _, e := range events {
		data, err := proto.Marshal(e.Data)
		if err != nil {
			f.t.Fatal(err)
		}
		stream := ovt.StreamOf(e.Type)
		f.seqs[stream]++
		r := bus.Record{Message: bus.Message{ID: uuid.NewString(), Type: e.Type}, Sequence: f.seqs[stream], Data: data}
		generation, _, err := f.cps.Position(f.t.Context(), f.p.Name(), stream)
		if err != nil {
			f.t.Fatal(err)
		}
		if err := f.cps.Apply(f.t.Context(), f.p, generation, stream, []bus.Record{r}); err != nil {
			f.t.Fatalf("apply %s: %v", e.Type, err)
		}
	}
}

func paid(id string) bus.Event              { return ovt.Paid(id, 2500) }
func declined(id string) bus.Event          { return ovt.Declined(id, 2500) }
func refunded(id string, a int64) bus.Event { return ovt.Refunded(id, a) }

// orders lists a customer's orders, all of them.
func orders(t *testing.T, db *storage.DB, customer string) []domain.Order {
	t.Helper()
	os, err := adapters.NewStore(db).CustomerOrders(t.Context(), customer, nil, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return os
}

func only(t *testing.T, db *storage.DB, customer string) domain.Order {
	t.Helper()
	os := orders(t, db, customer)
	if len(os) != 1 {
		t.Fatalf("customer %s has %d orders listed, want 1: %+v", customer, len(os), os)
	}
	return os[0]
}

func newID() string { return uuid.Must(uuid.NewV7()).String() }

// A repeated event and a stale one (a lower version than the row's) leave
// the row as it was.
func TestOrders_DuplicatesAndStaleRedeliveriesNeverRegressARow(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		f := newFeed(t, db, adapters.Orders{})
		o, c := newID(), newID()
		f.publish(ovt.Created(o, c, 1, t0), ovt.Confirmed(o, c, 4, t0.Add(time.Second)))
		want := only(t, db, c)
		if want.Status != domain.Confirmed || want.Version != 4 || !want.UpdatedAt.Equal(t0.Add(time.Second)) {
			t.Fatalf("after confirmation: %+v", want)
		}
		f.publish(ovt.Created(o, c, 1, t0), ovt.Confirmed(o, c, 4, t0.Add(time.Second)), ovt.Cancelled(o, c, "timeout", 3, t0.Add(time.Minute)), ovt.Created(o, c, 1, t0))
		if got := only(t, db, c); !reflect.DeepEqual(got, want) {
			t.Fatalf("after duplicates and a stale event:\n got %+v\nwant %+v", got, want)
		}
	})
}

// An event before order.created is kept: the order is listed, with that
// event's status, as soon as order.created arrives.
func TestOrders_EventBeforeCreatedIsNotLost(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		f := newFeed(t, db, adapters.Orders{})
		o, c := newID(), newID()
		f.publish(ovt.Cancelled(o, c, "payment_declined", 6, t0.Add(time.Minute)))
		if os := orders(t, db, c); len(os) != 0 {
			t.Fatalf("an order without order.created is listed: %+v", os)
		}
		f.publish(ovt.Created(o, c, 1, t0))
		got := only(t, db, c)
		if got.Status != domain.Cancelled || got.Reason != "payment_declined" || got.Version != 6 ||
			got.Total != (domain.Money{Amount: 2500, Currency: "EUR"}) || len(got.Items) != 1 || got.Items[0].Name != "Mug" ||
			!got.CreatedAt.Equal(t0) || got.Saga != "orchestrated" {
			t.Fatalf("row after order.created: %+v", got)
		}
	})
}

// The customer's name reaches the orders whichever comes first, and a
// rename reaches all of them; a late copy of the first name does not undo it.
func TestOrders_CustomerNameArrivesWhicheverComesFirst(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		f := newFeed(t, db, adapters.Orders{})
		ann, bob := newID(), newID()
		a1, a2, b1 := newID(), newID(), newID()

		f.publish(ovt.Created(a1, ann, 1, t0), ovt.Confirmed(a1, ann, 2, t0))
		f.publish(ovt.Registered(ann, "Ann", t0))
		f.publish(ovt.Created(a2, ann, 1, t0.Add(time.Second)))
		for _, o := range orders(t, db, ann) {
			if o.CustomerName != "Ann" {
				t.Fatalf("order %s shows name %q, want Ann", o.ID, o.CustomerName)
			}
		}

		f.publish(ovt.Registered(bob, "Bob", t0), ovt.Created(b1, bob, 1, t0))
		f.publish(ovt.Updated(ann, "Ann Smith", t0.Add(time.Hour)), ovt.Registered(ann, "Ann", t0))
		for _, o := range orders(t, db, ann) {
			if o.CustomerName != "Ann Smith" {
				t.Fatalf("order %s shows name %q after the rename, want Ann Smith", o.ID, o.CustomerName)
			}
		}
		if got := only(t, db, bob); got.CustomerName != "Bob" {
			t.Fatalf("bob's order shows %q", got.CustomerName)
		}
	})
}

func TestOrders_PaymentStatusFollowsThePaymentStream(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		f := newFeed(t, db, adapters.Orders{})
		c := newID()
		o1, o2 := newID(), newID()
		// The payment is known before the order.
		f.publish(paid(o1), ovt.Created(o1, c, 1, t0))
		if got := only(t, db, c); got.PaymentStatus != domain.PaymentCaptured {
			t.Fatalf("payment status %q, want CAPTURED", got.PaymentStatus)
		}
		f.publish(refunded(o1, 2500), paid(o1))
		if got := only(t, db, c); got.PaymentStatus != domain.PaymentRefunded {
			t.Fatalf("payment status %q after refund and a late copy of payment.completed, want REFUNDED", got.PaymentStatus)
		}
		f.publish(ovt.Created(o2, c, 1, t0.Add(time.Second)), declined(o2), refunded(o2, 0))
		if got := orders(t, db, c)[0]; got.ID != o2 || got.PaymentStatus != domain.PaymentDeclined {
			t.Fatalf("declined order: %+v", got)
		}
	})
}

func TestOrders_ShipmentIsRecordedEvenOutOfOrder(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		f := newFeed(t, db, adapters.Orders{})
		c := newID()
		o := newID()
		f.publish(ovt.Created(o, c, 1, t0), ovt.Shipped(o, c, 5, t0.Add(time.Hour)), ovt.Confirmed(o, c, 3, t0.Add(time.Second)), ovt.Shipped(o, c, 5, t0.Add(time.Hour)))
		got := only(t, db, c)
		want := domain.Shipment{ID: "ship-" + o[:8], TrackingNumber: "TRK-" + o[:8], ShippedAt: t0.Add(time.Hour)}
		if got.Status != domain.Shipped || got.Version != 5 || got.Shipment == nil || *got.Shipment != want || !got.UpdatedAt.Equal(t0.Add(time.Hour)) {
			t.Fatalf("shipped order: %+v (shipment %+v)", got, got.Shipment)
		}
	})
}

// Keyset pages: newest first, each page after the last order of the one
// before, orders at the same instant ordered by id.
func TestStore_PagesACustomersOrdersNewestFirst(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		f := newFeed(t, db, adapters.Orders{})
		c, other := newID(), newID()
		var want []string
		for i := range 7 {
			id := newID()
			at := t0.Add(time.Duration(i/2) * time.Second) // two orders per instant
			f.publish(ovt.Created(id, c, 1, at), ovt.Created(newID(), other, 1, at))
			want = append([]string{id}, want...)
		}
		// Same instant: the larger id first.
		for i := 0; i+1 < len(want); i++ {
			if i%2 == 1 && want[i] < want[i+1] {
				want[i], want[i+1] = want[i+1], want[i]
			}
		}
		list := app.NewListOrdersHandler(adapters.NewStore(db))
		var got []string
		var sizes []int
		// Pages of 2 split each pair of orders of the same instant.
		q := app.ListOrders{CustomerID: c, Limit: 2}
		for {
			p, err := list.Handle(t.Context(), q)
			if err != nil {
				t.Fatal(err)
			}
			sizes = append(sizes, len(p.Orders))
			for _, o := range p.Orders {
				got = append(got, o.ID)
			}
			if p.Next == nil {
				break
			}
			q.After = p.Next
		}
		if fmt.Sprint(sizes) != "[2 2 2 1]" || !reflect.DeepEqual(got, want) {
			t.Fatalf("pages of %v: %v\nwant %v", sizes, got, want)
		}
	})
}

// recorder is a projection that writes each record's sequence as a row and
// can be told to fail at one sequence.
type recorder struct{ failAt uint64 }

func (recorder) Name() string      { return "recorder" }
func (recorder) Streams() []string { return []string{"S"} }
func (p recorder) Apply(ctx context.Context, tx *sql.Tx, r bus.Record) error {
	if r.Sequence == p.failAt {
		return errors.New("cannot apply")
	}
	if r.Type == "poison" {
		return fmt.Errorf("bad record: %w", bus.ErrPoison)
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO payment_statuses (order_id, status) VALUES ($1, 'x')`, fmt.Sprint(r.Sequence))
	return err
}
func (recorder) Reset(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM payment_statuses`)
	return err
}

func applied(t *testing.T, db *storage.DB) string {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), `SELECT order_id FROM payment_statuses ORDER BY CAST(order_id AS INTEGER)`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return fmt.Sprint(out)
}

func recs(seqs ...uint64) []bus.Record {
	out := make([]bus.Record, len(seqs))
	for i, s := range seqs {
		out[i] = bus.Record{Message: bus.Message{Type: "x"}, Sequence: s}
	}
	return out
}

// The checkpoint moves with the rows, in one transaction: records at or
// before it are skipped, a failed batch leaves neither rows nor checkpoint,
// a poison record is skipped, and a batch read before a rebuild is refused.
func TestCheckpoints_MoveWithTheRowsTheyCover(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := t.Context()
		cps := adapters.NewCheckpoints(db, slog.New(slog.DiscardHandler))
		p := recorder{failAt: 6}
		if err := cps.Register(ctx, p.Name()); err != nil {
			t.Fatal(err)
		}
		checkpoint := func() uint64 {
			t.Helper()
			gen, seq, err := cps.Position(ctx, p.Name(), "S")
			if err != nil || gen < 1 {
				t.Fatalf("position: %d %d %v", gen, seq, err)
			}
			return seq
		}

		if err := cps.Apply(ctx, p, 1, "S", recs(1, 2, 3)); err != nil {
			t.Fatal(err)
		}
		// A restart, or another instance, reads 2 and 3 again.
		if err := cps.Apply(ctx, p, 1, "S", recs(2, 3, 4)); err != nil {
			t.Fatal(err)
		}
		if got := applied(t, db); got != "[1 2 3 4]" || checkpoint() != 4 {
			t.Fatalf("applied %s, checkpoint %d; want [1 2 3 4] and 4", got, checkpoint())
		}

		err := cps.Apply(ctx, p, 1, "S", recs(5, 6, 7))
		if err == nil || errors.Is(err, bus.ErrPoison) {
			t.Fatalf("a batch that fails at 6 returned %v", err)
		}
		if got := applied(t, db); got != "[1 2 3 4]" || checkpoint() != 4 {
			t.Fatalf("after a failed batch: applied %s, checkpoint %d; want nothing of it", got, checkpoint())
		}

		poison := recs(5)
		poison[0].Type = "poison"
		if err := cps.Apply(ctx, p, 1, "S", append(poison, recs(7)...)); err != nil {
			t.Fatal(err)
		}
		if got := applied(t, db); got != "[1 2 3 4 7]" || checkpoint() != 7 {
			t.Fatalf("after a poison record: applied %s, checkpoint %d", got, checkpoint())
		}

		if err := cps.Reset(ctx, p, t0); err != nil {
			t.Fatal(err)
		}
		if got := applied(t, db); got != "[]" || checkpoint() != 0 {
			t.Fatalf("after reset: applied %s, checkpoint %d", got, checkpoint())
		}
		if err := cps.Apply(ctx, p, 1, "S", recs(8)); !errors.Is(err, adapters.ErrRebuilt) {
			t.Fatalf("a batch of the old generation returned %v, want ErrRebuilt", err)
		}
		saved, err := cps.Saved(ctx, p.Name())
		if err != nil || saved.Generation != 2 || !saved.RebuiltAt.Equal(t0) || len(saved.Checkpoints) != 0 {
			t.Fatalf("saved %+v, %v", saved, err)
		}
	})
}

// The statistics aggregate facts, so duplicates and events out of order
// count once.
func TestAnalytics_StatsCountEachOrderOnceWhateverTheOrderOfEvents(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		f := newFeed(t, db, adapters.Analytics{})
		c := newID()
		o1, o2, o3, o4, o5 := newID(), newID(), newID(), newID(), newID()
		choreo := ovt.Created(o2, c, 1, t0.Add(time.Second))
		choreo.Data.(*orderv1.OrderCreated).Saga = "choreographed"
		usd := ovt.Created(o5, c, 1, t0.Add(2*time.Hour))
		usd.Data.(*orderv1.OrderCreated).Total = &moneyv1.Money{Amount: 900, Currency: "USD"}
		events := []bus.Event{
			ovt.Confirmed(o1, c, 3, t0.Add(2*time.Second)), ovt.Created(o1, c, 1, t0), // confirmed in 2s, 07:00
			choreo, ovt.Cancelled(o2, c, "payment_declined", 4, t0.Add(5*time.Second)), // cancelled in 4s
			ovt.Created(o3, c, 1, t0), ovt.Cancelled(o3, c, "out_of_stock", 2, t0.Add(8*time.Second)), // cancelled in 8s
			ovt.Created(o4, c, 1, t0),                                     // in flight
			usd, ovt.Confirmed(o5, c, 3, t0.Add(2*time.Hour+time.Second)), // 09:00, USD, 1s
			// Confirmed in 07:00, then cancelled by the customer: a confirmed
			// saga and a cancellation.
			ovt.Created(o1, c, 1, t0), ovt.Cancelled(o1, c, "customer_cancelled", 5, t0.Add(time.Hour)),
		}
		f.publish(events...)
		f.publish(events...) // every event again
		st, err := adapters.NewStore(db).Stats(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		want := domain.Stats{
			Hourly: []domain.HourlyRevenue{
				{Hour: time.Date(2030, 5, 6, 7, 0, 0, 0, time.UTC), Orders: 1, Revenue: domain.Money{Amount: 2500, Currency: "EUR"}},
				{Hour: time.Date(2030, 5, 6, 9, 0, 0, 0, time.UTC), Orders: 1, Revenue: domain.Money{Amount: 900, Currency: "USD"}},
			},
			Cancellations: []domain.Cancellations{
				{Reason: "customer_cancelled", Orders: 1}, {Reason: "out_of_stock", Orders: 1}, {Reason: "payment_declined", Orders: 1},
			},
			Sagas: []domain.SagaStats{
				{Saga: "choreographed", Cancelled: 1, Durations: domain.Durations{Count: 1, Total: 4 * time.Second, Max: 4 * time.Second}},
				{Saga: "orchestrated", Confirmed: 2, Cancelled: 1, InFlight: 1, Durations: domain.Durations{Count: 3, Total: 11 * time.Second, Max: 8 * time.Second}},
			},
		}
		if !reflect.DeepEqual(st, want) {
			t.Fatalf("stats:\n got %+v\nwant %+v", st, want)
		}
	})
}

// flaky is a projection that fails (not poison) while fail is set.
type flaky struct{ fail *atomic.Bool }

func (flaky) Name() string      { return "flaky" }
func (flaky) Streams() []string { return []string{"FLAKY"} }
func (p flaky) Apply(ctx context.Context, tx *sql.Tx, r bus.Record) error {
	if p.fail.Load() {
		return errors.New("database unavailable")
	}
	return recorder{}.Apply(ctx, tx, r)
}
func (flaky) Reset(ctx context.Context, tx *sql.Tx) error { return recorder{}.Reset(ctx, tx) }

// A runner whose batches fail says so in its status, keeps the checkpoint
// where it was, and reads again from it until the batch applies; so does a
// rebuild, which says rebuilding until the replay is done.
func TestRunner_ReadsAgainFromItsCheckpointUntilABatchApplies(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	srv, err := bus.StartServer(ctx, bus.ServerConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	b, err := bus.Connect(ctx, bus.Config{URL: srv.ClientURL(), Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	if err := b.EnsureStream(ctx, bus.Stream{Name: "FLAKY", Subjects: []string{"flaky.>"}}); err != nil {
		t.Fatal(err)
	}
	db := storagetest.Open(t, storagetest.Engines(t)[0], migrations.FS)
	p := flaky{fail: &atomic.Bool{}}
	p.fail.Store(true)
	r := adapters.NewRunner(p, adapters.NewCheckpoints(db, slog.New(slog.DiscardHandler)), adapters.BusSource{Bus: b}, slog.New(slog.DiscardHandler))
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Stop(context.Background()) })
	for i := range 3 {
		if err := b.Publish(ctx, bus.Event{Type: "flaky.x", Data: wrapperspb.String(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}

	status := func(done func(adapters.Status) bool) adapters.Status {
		t.Helper()
		for {
			st, err := r.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if done(st) {
				return st
			}
			select {
			case <-ctx.Done():
				t.Fatalf("status %+v", st)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	st := status(func(st adapters.Status) bool { return st.Errors["FLAKY"] != "" })
	if st.State != adapters.StateCatchingUp || st.Streams[0].Checkpoint != 0 || st.Streams[0].Lag != 3 || applied(t, db) != "[]" {
		t.Fatalf("while failing: %+v, applied %s", st, applied(t, db))
	}
	p.fail.Store(false)
	st = status(func(st adapters.Status) bool { return st.State == adapters.StateLive })
	if len(st.Errors) != 0 || st.Streams[0].Checkpoint != 3 || applied(t, db) != "[1 2 3]" {
		t.Fatalf("after recovery: %+v, applied %s", st, applied(t, db))
	}

	// Rebuilt while it cannot apply: rebuilding until the replay is done.
	p.fail.Store(true)
	if err := r.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	st = status(func(st adapters.Status) bool { return st.Errors["FLAKY"] != "" })
	if st.State != adapters.StateRebuilding || st.Generation != 2 || st.Streams[0].Checkpoint != 0 || applied(t, db) != "[]" {
		t.Fatalf("rebuilding: %+v, applied %s", st, applied(t, db))
	}
	p.fail.Store(false)
	st = status(func(st adapters.Status) bool { return st.State == adapters.StateLive })
	if st.Generation != 2 || applied(t, db) != "[1 2 3]" {
		t.Fatalf("rebuilt: %+v, applied %s", st, applied(t, db))
	}
}

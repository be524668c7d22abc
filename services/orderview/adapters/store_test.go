package adapters_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	customerv1 "github.com/mercato-shop/mercato/api/gen/customer/v1"
	moneyv1 "github.com/mercato-shop/mercato/api/gen/money/v1"
	orderv1 "github.com/mercato-shop/mercato/api/gen/order/v1"
	paymentv1 "github.com/mercato-shop/mercato/api/gen/payment/v1"
	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/platform/storage/storagetest"
	"github.com/mercato-shop/mercato/services/orderview/adapters"
	"github.com/mercato-shop/mercato/services/orderview/app"
	"github.com/mercato-shop/mercato/services/orderview/domain"
	"github.com/mercato-shop/mercato/services/orderview/migrations"
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

// record is an event as the stream holds it.
func (f *feed) record(stream, typ string, m proto.Message) bus.Record {
	f.t.Helper()
	data, err := proto.Marshal(m)
	if err != nil {
		f.t.Fatal(err)
	}
	f.seqs[stream]++
	return bus.Record{Message: bus.Message{ID: uuid.NewString(), Type: typ}, Sequence: f.seqs[stream], Data: data}
}

func (f *feed) apply(stream string, rs ...bus.Record) error {
	generation, _, err := f.cps.Position(f.t.Context(), f.p.Name(), stream)
	if err != nil {
		f.t.Fatal(err)
	}
	return f.cps.Apply(f.t.Context(), f.p, generation, stream, rs)
}

// publish applies one event, each alone in its batch.
func (f *feed) publish(events ...ev) {
	f.t.Helper()
	for _, e := range events {
		if err := f.apply(e.stream, f.record(e.stream, e.typ, e.msg)); err != nil {
			f.t.Fatalf("apply %s: %v", e.typ, err)
		}
	}
}

type ev struct {
	stream, typ string
	msg         proto.Message
}

func eur(amount int64) *moneyv1.Money { return &moneyv1.Money{Amount: amount, Currency: "EUR"} }

func created(id, customer string, v int64, at time.Time) ev {
	return ev{adapters.StreamOrder, "order.created", &orderv1.OrderCreated{
		OrderId: id, CustomerId: customer, Saga: "orchestrated", CreatedAt: timestamppb.New(at), Version: v,
		Items: []*orderv1.OrderLine{{ProductId: "p-mug", Name: "Mug", Quantity: 2, UnitPrice: eur(1250)}},
		Total: eur(2500), PaymentToken: "tok_ok",
	}}
}

func confirmed(id, customer string, v int64, at time.Time) ev {
	return ev{adapters.StreamOrder, "order.confirmed", &orderv1.OrderConfirmed{OrderId: id, CustomerId: customer, ConfirmedAt: timestamppb.New(at), Version: v}}
}

func cancelled(id, customer, reason string, v int64, at time.Time) ev {
	return ev{adapters.StreamOrder, "order.cancelled", &orderv1.OrderCancelled{OrderId: id, CustomerId: customer, Reason: reason, CancelledAt: timestamppb.New(at), Version: v}}
}

func shipped(id, customer string, v int64, at time.Time) ev {
	return ev{adapters.StreamOrder, "order.shipped", &orderv1.OrderShipped{
		OrderId: id, CustomerId: customer, ShipmentId: "ship-" + id[:8], TrackingNumber: "TRK-" + id[:8], ShippedAt: timestamppb.New(at), Version: v,
	}}
}

func registered(customer, name string, at time.Time) ev {
	return ev{adapters.StreamCustomer, "customer.registered", &customerv1.CustomerRegistered{CustomerId: customer, Email: "x@example.com", Name: name, RegisteredAt: timestamppb.New(at)}}
}

func updated(customer, name string, at time.Time) ev {
	return ev{adapters.StreamCustomer, "customer.updated", &customerv1.CustomerUpdated{CustomerId: customer, Email: "x@example.com", Name: name, UpdatedAt: timestamppb.New(at)}}
}

func paid(id string) ev {
	return ev{adapters.StreamPayment, "payment.completed", &paymentv1.PaymentCompleted{PaymentId: "pay-" + id, OrderId: id, Amount: eur(2500), Saga: "orchestrated"}}
}

func refunded(id string, amount int64) ev {
	return ev{adapters.StreamPayment, "payment.refunded", &paymentv1.PaymentRefunded{PaymentId: "pay-" + id, OrderId: id, Amount: eur(amount), Saga: "orchestrated"}}
}

func declined(id string) ev {
	return ev{adapters.StreamPayment, "payment.failed", &paymentv1.PaymentFailed{PaymentId: "pay-" + id, OrderId: id, Amount: eur(2500), Reason: "payment_declined"}}
}

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
		f.publish(created(o, c, 1, t0), confirmed(o, c, 4, t0.Add(time.Second)))
		want := only(t, db, c)
		if want.Status != domain.Confirmed || want.Version != 4 || !want.UpdatedAt.Equal(t0.Add(time.Second)) {
			t.Fatalf("after confirmation: %+v", want)
		}
		f.publish(created(o, c, 1, t0), confirmed(o, c, 4, t0.Add(time.Second)), cancelled(o, c, "timeout", 3, t0.Add(time.Minute)), created(o, c, 1, t0))
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
		f.publish(cancelled(o, c, "payment_declined", 6, t0.Add(time.Minute)))
		if os := orders(t, db, c); len(os) != 0 {
			t.Fatalf("an order without order.created is listed: %+v", os)
		}
		f.publish(created(o, c, 1, t0))
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

		f.publish(created(a1, ann, 1, t0), confirmed(a1, ann, 2, t0))
		f.publish(registered(ann, "Ann", t0))
		f.publish(created(a2, ann, 1, t0.Add(time.Second)))
		for _, o := range orders(t, db, ann) {
			if o.CustomerName != "Ann" {
				t.Fatalf("order %s shows name %q, want Ann", o.ID, o.CustomerName)
			}
		}

		f.publish(registered(bob, "Bob", t0), created(b1, bob, 1, t0))
		f.publish(updated(ann, "Ann Smith", t0.Add(time.Hour)), registered(ann, "Ann", t0))
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
		f.publish(paid(o1), created(o1, c, 1, t0))
		if got := only(t, db, c); got.PaymentStatus != domain.PaymentCaptured {
			t.Fatalf("payment status %q, want CAPTURED", got.PaymentStatus)
		}
		f.publish(refunded(o1, 2500), paid(o1))
		if got := only(t, db, c); got.PaymentStatus != domain.PaymentRefunded {
			t.Fatalf("payment status %q after refund and a late copy of payment.completed, want REFUNDED", got.PaymentStatus)
		}
		f.publish(created(o2, c, 1, t0.Add(time.Second)), declined(o2), refunded(o2, 0))
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
		f.publish(created(o, c, 1, t0), shipped(o, c, 5, t0.Add(time.Hour)), confirmed(o, c, 3, t0.Add(time.Second)), shipped(o, c, 5, t0.Add(time.Hour)))
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
			f.publish(created(id, c, 1, at), created(newID(), other, 1, at))
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
		choreo := created(o2, c, 1, t0.Add(time.Second))
		choreo.msg.(*orderv1.OrderCreated).Saga = "choreographed"
		usd := created(o5, c, 1, t0.Add(2*time.Hour))
		usd.msg.(*orderv1.OrderCreated).Total = &moneyv1.Money{Amount: 900, Currency: "USD"}
		events := []ev{
			confirmed(o1, c, 3, t0.Add(2*time.Second)), created(o1, c, 1, t0), // confirmed in 2s, 07:00
			choreo, cancelled(o2, c, "payment_declined", 4, t0.Add(5*time.Second)), // cancelled in 4s
			created(o3, c, 1, t0), cancelled(o3, c, "out_of_stock", 2, t0.Add(8*time.Second)), // cancelled in 8s
			created(o4, c, 1, t0),                                     // in flight
			usd, confirmed(o5, c, 3, t0.Add(2*time.Hour+time.Second)), // 09:00, USD, 1s
			// Confirmed in 07:00, then cancelled by the customer: a confirmed
			// saga and a cancellation.
			created(o1, c, 1, t0), cancelled(o1, c, "customer_cancelled", 5, t0.Add(time.Hour)),
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

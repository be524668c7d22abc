package domain

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
)

func pid() string { return uuid.Must(uuid.NewV7()).String() }

func newOrder(t *testing.T) *Order {
	t.Helper()
	o, err := NewOrder("c1", []Line{
		{ProductID: pid(), Name: "Mug", Quantity: 2, UnitPrice: Money{1450, "EUR"}},
		{ProductID: pid(), Name: "Tee", Quantity: 1, UnitPrice: Money{2400, "EUR"}},
	}, Orchestrated, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func TestNewOrder_TotalsInMinorUnits(t *testing.T) {
	o := newOrder(t)
	if o.Total() != (Money{5300, "EUR"}) || o.Status() != Pending || o.Version() != 1 {
		t.Fatalf("order %+v", o)
	}
	if _, err := NewOrder("c1", []Line{{ProductID: pid(), Quantity: 1, UnitPrice: Money{100, "EUR"}}, {ProductID: pid(), Quantity: 1, UnitPrice: Money{100, "USD"}}}, Orchestrated, time.Now()); err == nil {
		t.Fatal("mixed currencies accepted")
	}
}

func TestValidateItems(t *testing.T) {
	a, b := pid(), pid()
	got, err := ValidateItems([]Item{{a, 2}, {b, 1}, {a, 3}})
	if err != nil || len(got) != 2 || got[0] != (Item{a, 5}) || got[1] != (Item{b, 1}) {
		t.Fatalf("merge: %v %v", got, err)
	}
	many := make([]Item, MaxLines+1)
	for i := range many {
		many[i] = Item{pid(), 1}
	}
	for name, items := range map[string][]Item{
		"none":          nil,
		"too many":      many,
		"not an id":     {{"mug", 1}},
		"zero":          {{a, 0}},
		"negative":      {{a, -1}},
		"huge":          {{a, MaxQuantity + 1}},
		"huge when sum": {{a, MaxQuantity}, {a, 1}},
	} {
		var v *ValidationError
		if _, err := ValidateItems(items); !errors.As(err, &v) {
			t.Errorf("%s: want a validation error, got %v", name, err)
		}
	}
}

func TestOrder_Transitions(t *testing.T) {
	now := time.Now()
	o := newOrder(t)
	if err := o.Confirm(now); err != nil || o.Status() != Confirmed || o.Version() != 2 {
		t.Fatalf("confirm: %v %v", err, o.Status())
	}
	if err := o.Confirm(now); !errors.Is(err, ErrInvalidTransition) {
		t.Fatalf("confirm twice: %v", err)
	}
	if err := o.Cancel("customer_cancelled", now); err != nil || o.Status() != Cancelled || o.Reason() != "customer_cancelled" {
		t.Fatalf("cancel confirmed: %v", err)
	}
	if err := o.Cancel("again", now); !errors.Is(err, ErrInvalidTransition) {
		t.Fatalf("cancel twice: %v", err)
	}
}

const stepTimeout = time.Minute

// The orchestrated saga of the playbook, step by step, with compensation.
func TestSaga(t *testing.T) {
	o := newOrder(t)
	charge := ChargePayment{OrderID: o.ID(), CustomerID: "c1", Amount: Money{5300, "EUR"}, Token: "tok_ok"}
	release := func(reason string) ReleaseStock { return ReleaseStock{OrderID: o.ID(), Reason: reason} }
	refund := func(reason string) RefundPayment { return RefundPayment{OrderID: o.ID(), Reason: reason} }
	type step struct {
		act        string // a reply kind, "cancel" or "expire"
		wantNext   []Command
		wantStep   Step
		wantStatus Status
		changed    bool
	}
	tests := []struct {
		name       string
		steps      []step
		wantReason string
	}{
		{"happy path", []step{
			{"inventory.reserved", []Command{charge}, Charging, Pending, true},
			{"inventory.reserved", nil, Charging, Pending, false}, // duplicate reply
			{"payment.completed", nil, Done, Confirmed, true},
			{"payment.completed", nil, Done, Confirmed, false},
		}, ""},
		{"out of stock", []step{
			{"inventory.failed", nil, Done, Cancelled, true},
			{"inventory.reserved", nil, Done, Cancelled, false}, // late and contradictory: ignored
		}, ReasonOutOfStock},
		{"payment declined compensates the reservation", []step{
			{"inventory.reserved", []Command{charge}, Charging, Pending, true},
			{"payment.failed", []Command{release(ReasonPaymentDeclined)}, Compensating, Pending, true},
			{"payment.failed", nil, Compensating, Pending, false},
			{"cancel", nil, Compensating, Pending, false}, // already on its way to CANCELLED
			{"inventory.released", nil, Done, Cancelled, true},
		}, ReasonPaymentDeclined},
		{"a release reply before the payment fails is ignored", []step{
			{"inventory.reserved", []Command{charge}, Charging, Pending, true},
			{"inventory.released", nil, Charging, Pending, false},
		}, ""},
		{"cancel while reserving releases", []step{
			{"cancel", []Command{release(ReasonCustomerCancelled)}, Compensating, Pending, true},
			{"inventory.reserved", nil, Compensating, Pending, false}, // late: the release undoes it
			{"inventory.released", nil, Done, Cancelled, true},
		}, ReasonCustomerCancelled},
		{"cancel while charging refunds, then releases", []step{
			{"inventory.reserved", []Command{charge}, Charging, Pending, true},
			{"cancel", []Command{refund(ReasonCustomerCancelled), release(ReasonCustomerCancelled)}, Compensating, Pending, true},
			{"payment.completed", nil, Compensating, Pending, false}, // a late capture: the refund undoes it
			{"inventory.released", nil, Compensating, Pending, true},
			{"payment.refunded", nil, Done, Cancelled, true},
			{"cancel", nil, Done, Cancelled, false}, // twice is harmless
		}, ReasonCustomerCancelled},
		{"cancel a confirmed order", []step{
			{"inventory.reserved", []Command{charge}, Charging, Pending, true},
			{"payment.completed", nil, Done, Confirmed, true},
			{"cancel", []Command{refund(ReasonCustomerCancelled), release(ReasonCustomerCancelled)}, Compensating, Confirmed, true},
			{"payment.refunded", nil, Compensating, Confirmed, true},
			{"inventory.released", nil, Done, Cancelled, true},
		}, ReasonCustomerCancelled},
		{"a charge that outlives its deadline is compensated", []step{
			{"inventory.reserved", []Command{charge}, Charging, Pending, true},
			{"expire", []Command{refund(ReasonTimeout), release(ReasonTimeout)}, Compensating, Pending, true},
			{"expire", nil, Compensating, Pending, false},
			{"payment.completed", nil, Compensating, Pending, false}, // the late success is refunded
			{"payment.refunded", nil, Compensating, Pending, true},
			{"inventory.released", nil, Done, Cancelled, true},
		}, ReasonTimeout},
		{"a release answered by a failed reservation completes the compensation", []step{
			{"cancel", []Command{release(ReasonCustomerCancelled)}, Compensating, Pending, true},
			{"inventory.failed", nil, Done, Cancelled, true},
		}, ReasonCustomerCancelled},
		{"a reservation that outlives its deadline is released", []step{
			{"expire", []Command{release(ReasonTimeout)}, Compensating, Pending, true},
			{"inventory.released", nil, Done, Cancelled, true},
		}, ReasonTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := Restore(o.ID(), "c1", Pending, "", o.Lines(), o.Total(), Orchestrated, Shipment{}, 1, o.CreatedAt(), o.UpdatedAt())
			now := time.Now()
			s := NewSaga(o, "tok_ok", now, stepTimeout)
			if got := s.Pending(o); len(got) != 1 || !equalCommand(got[0], ReserveStock{OrderID: o.ID(), Lines: o.Lines()}) {
				t.Fatalf("first command %#v", got)
			}
			for i, st := range tt.steps {
				var next []Command
				var changed bool
				var err error
				switch st.act {
				case "cancel":
					next, changed, err = s.Cancel(o, now)
				case "expire":
					if _, early := s.Expire(o, now); early {
						t.Fatalf("step %d: expired before its deadline", i)
					}
					now = now.Add(stepTimeout + time.Second)
					next, changed = s.Expire(o, now)
				default:
					next, changed, err = s.Handle(o, Reply{Kind: ReplyKind(st.act)}, now, stepTimeout)
				}
				if err != nil {
					t.Fatalf("step %d (%s): %v", i, st.act, err)
				}
				if changed != st.changed || !equalCommands(next, st.wantNext) || s.Step() != st.wantStep || o.Status() != st.wantStatus {
					t.Fatalf("step %d (%s): next %#v changed %v step %s status %s", i, st.act, next, changed, s.Step(), o.Status())
				}
			}
			if o.Reason() != tt.wantReason {
				t.Fatalf("reason %q, want %q", o.Reason(), tt.wantReason)
			}
		})
	}
}

func TestSaga_ShippedOrdersCannotBeCancelled(t *testing.T) {
	o := newOrder(t)
	shipped := Restore(o.ID(), "c1", Shipped, "", o.Lines(), o.Total(), Orchestrated, Shipment{}, 3, o.CreatedAt(), o.UpdatedAt())
	s := RestoreSaga(o.ID(), Done, nil, "", "tok_ok", 0, time.Time{}, time.Now())
	if _, _, err := s.Cancel(shipped, time.Now()); !errors.Is(err, ErrInvalidTransition) {
		t.Fatalf("cancel shipped: %v", err)
	}
}

func equalCommands(a, b []Command) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !equalCommand(a[i], b[i]) {
			return false
		}
	}
	return true
}

func equalCommand(a, b Command) bool {
	switch x := a.(type) {
	case nil:
		return b == nil
	case ReserveStock:
		y, ok := b.(ReserveStock)
		if !ok || x.OrderID != y.OrderID || len(x.Lines) != len(y.Lines) {
			return false
		}
		for i := range x.Lines {
			if x.Lines[i] != y.Lines[i] {
				return false
			}
		}
		return true
	default:
		return a == b
	}
}

// The choreographed saga: the order announces itself and reads the outcome
// from the other contexts' events.
func TestSaga_Choreographed(t *testing.T) {
	base := newOrder(t)
	newChoreographed := func() (*Order, *Saga) {
		o := Restore(base.ID(), "c1", Pending, "", base.Lines(), base.Total(), Choreographed, Shipment{}, 1, base.CreatedAt(), base.UpdatedAt())
		return o, NewSaga(o, "tok_ok", time.Now(), stepTimeout)
	}
	handle := func(o *Order, s *Saga, kind ReplyKind) bool {
		t.Helper()
		next, changed, err := s.Handle(o, Reply{Kind: kind}, time.Now(), stepTimeout)
		if err != nil || len(next) != 0 {
			t.Fatalf("%s: next %v err %v", kind, next, err)
		}
		return changed
	}

	o, s := newChoreographed()
	if p := s.Pending(o); len(p) != 1 || p[0].(AnnounceOrder).Order != o || s.Step() != Reacting {
		t.Fatalf("first move %#v, step %s", p, s.Step())
	}
	handle(o, s, PaymentCompleted) // inventory has not answered yet
	if !handle(o, s, StockReserved) || o.Status() != Confirmed || s.Step() != Done {
		t.Fatalf("reserved: %s %s", o.Status(), s.Step())
	}

	o, s = newChoreographed()
	if !handle(o, s, PaymentFailed) || o.Status() != Cancelled || o.Reason() != ReasonPaymentDeclined {
		t.Fatalf("declined: %s %s", o.Status(), o.Reason())
	}

	o, s = newChoreographed()
	if !handle(o, s, StockFailed) || o.Status() != Pending {
		t.Fatal("inventory failed: the order waits for the refund")
	}
	if !handle(o, s, PaymentRefunded) || o.Status() != Cancelled || o.Reason() != ReasonOutOfStock {
		t.Fatalf("refunded: %s %s", o.Status(), o.Reason())
	}

	o, s = newChoreographed() // the refund overtakes inventory.failed
	if !handle(o, s, PaymentRefunded) || o.Reason() != ReasonOutOfStock {
		t.Fatalf("refund first: %s %s", o.Status(), o.Reason())
	}

	o, s = newChoreographed()
	next, _ := s.Expire(o, time.Now().Add(3*stepTimeout))
	if len(next) != 2 || s.Step() != Compensating {
		t.Fatalf("a stalled choreography is compensated by command: %#v", next)
	}
}

// payment.failed's reason picks the order's: a provider that was down is
// not a declined card, in either saga.
func TestSaga_PaymentUnavailableIsNotADecline(t *testing.T) {
	for _, mode := range []string{Orchestrated, Choreographed} {
		for reason, want := range map[string]string{
			PaymentProviderUnavailable: ReasonPaymentUnavailable,
			"payment_declined":         ReasonPaymentDeclined,
			"":                         ReasonPaymentDeclined,
		} {
			base := newOrder(t)
			o := Restore(base.ID(), "c1", Pending, "", base.Lines(), base.Total(), mode, Shipment{}, 1, base.CreatedAt(), base.UpdatedAt())
			s := NewSaga(o, "tok_ok", time.Now(), stepTimeout)
			if mode == Orchestrated {
				if _, _, err := s.Handle(o, Reply{Kind: StockReserved}, time.Now(), stepTimeout); err != nil {
					t.Fatal(err)
				}
			}
			if _, _, err := s.Handle(o, Reply{Kind: PaymentFailed, Reason: reason}, time.Now(), stepTimeout); err != nil {
				t.Fatal(err)
			}
			if mode == Orchestrated { // the stock comes back first
				if _, _, err := s.Handle(o, Reply{Kind: StockReleased}, time.Now(), stepTimeout); err != nil {
					t.Fatal(err)
				}
			}
			if o.Status() != Cancelled || o.Reason() != want {
				t.Errorf("%s, payment.failed %q: %s %q, want CANCELLED %q", mode, reason, o.Status(), o.Reason(), want)
			}
		}
	}
}

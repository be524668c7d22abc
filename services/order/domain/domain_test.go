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

// The orchestrated saga of the playbook, step by step, with compensation.
func TestSaga(t *testing.T) {
	type step struct {
		reply      ReplyKind
		wantNext   Command // nil: no command
		wantStep   Step
		wantStatus Status
		changed    bool
	}
	o := newOrder(t)
	reserve := ReserveStock{OrderID: o.ID(), Lines: o.Lines()}
	charge := ChargePayment{OrderID: o.ID(), CustomerID: "c1", Amount: Money{5300, "EUR"}, Token: "tok_ok"}
	release := ReleaseStock{OrderID: o.ID(), Reason: ReasonPaymentDeclined}
	tests := []struct {
		name       string
		steps      []step
		wantReason string
	}{
		{"happy path", []step{
			{StockReserved, charge, Charging, Pending, true},
			{StockReserved, nil, Charging, Pending, false}, // duplicate reply
			{PaymentCompleted, nil, Done, Confirmed, true},
			{PaymentCompleted, nil, Done, Confirmed, false},
		}, ""},
		{"out of stock", []step{
			{StockFailed, nil, Done, Cancelled, true},
			{StockReserved, nil, Done, Cancelled, false}, // late and contradictory: ignored
		}, ReasonOutOfStock},
		{"payment declined compensates the reservation", []step{
			{StockReserved, charge, Charging, Pending, true},
			{PaymentFailed, release, Releasing, Pending, true},
			{PaymentFailed, nil, Releasing, Pending, false},
			{StockReleased, nil, Done, Cancelled, true},
		}, ReasonPaymentDeclined},
		{"a release reply before the payment fails is ignored", []step{
			{StockReserved, charge, Charging, Pending, true},
			{StockReleased, nil, Charging, Pending, false},
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := Restore(o.ID(), "c1", Pending, "", o.Lines(), o.Total(), Orchestrated, 1, o.CreatedAt(), o.UpdatedAt())
			s := NewSaga(o, "tok_ok", time.Now())
			if got := s.Pending(o); !equalCommand(got, reserve) {
				t.Fatalf("first command %#v", got)
			}
			for i, st := range tt.steps {
				next, changed, err := s.Handle(o, Reply{Kind: st.reply}, time.Now())
				if err != nil {
					t.Fatalf("step %d (%s): %v", i, st.reply, err)
				}
				if changed != st.changed || !equalCommand(next, st.wantNext) || s.Step() != st.wantStep || o.Status() != st.wantStatus {
					t.Fatalf("step %d (%s): next %#v changed %v step %s status %s", i, st.reply, next, changed, s.Step(), o.Status())
				}
			}
			if o.Reason() != tt.wantReason {
				t.Fatalf("reason %q, want %q", o.Reason(), tt.wantReason)
			}
		})
	}
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

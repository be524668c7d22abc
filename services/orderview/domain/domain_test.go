package domain

import (
	"reflect"
	"testing"
	"time"
)

var t0 = time.Date(2030, 5, 6, 7, 40, 0, 0, time.UTC)

func created(v int64) OrderCreated {
	return OrderCreated{
		OrderID: "o1", CustomerID: "c1", Saga: "orchestrated", CreatedAt: t0, Version: v,
		Items: []Line{{ProductID: "p1", Name: "Mug", Quantity: 2, UnitPrice: Money{1250, "EUR"}}},
		Total: Money{2500, "EUR"},
	}
}

func confirmed(v int64) OrderConfirmed {
	return OrderConfirmed{OrderID: "o1", CustomerID: "c1", ConfirmedAt: t0.Add(2 * time.Second), Version: v}
}

func cancelled(v int64, reason string) OrderCancelled {
	return OrderCancelled{OrderID: "o1", CustomerID: "c1", Reason: reason, CancelledAt: t0.Add(time.Minute), Version: v}
}

func shipped(v int64) OrderShipped {
	return OrderShipped{OrderID: "o1", CustomerID: "c1", Version: v,
		Shipment: Shipment{ID: "s1", TrackingNumber: "TRK1", ShippedAt: t0.Add(time.Hour)}}
}

// permutations returns every order of evs.
func permutations(evs []any) [][]any {
	if len(evs) <= 1 {
		return [][]any{evs}
	}
	var out [][]any
	for i := range evs {
		rest := append(append([]any{}, evs[:i]...), evs[i+1:]...)
		for _, p := range permutations(rest) {
			out = append(out, append([]any{evs[i]}, p...))
		}
	}
	return out
}

// Whatever order the events of an order arrive in, and however often each
// arrives, the row ends the same: created facts kept, the status of the
// highest version, the shipment recorded.
func TestOrder_ConvergesWhateverTheArrivalOrderAndDuplicates(t *testing.T) {
	tests := []struct {
		name   string
		events []any
		want   Order
	}{
		{
			name:   "shipped",
			events: []any{created(1), confirmed(4), shipped(5)},
			want: Order{ID: "o1", CustomerID: "c1", Status: Shipped, Items: created(1).Items, Total: Money{2500, "EUR"},
				Saga: "orchestrated", Shipment: &Shipment{"s1", "TRK1", t0.Add(time.Hour)}, CreatedAt: t0,
				UpdatedAt: t0.Add(time.Hour), Version: 5, Created: true},
		},
		{
			name:   "cancelled after confirmation",
			events: []any{created(1), confirmed(4), cancelled(7, "customer_cancelled")},
			want: Order{ID: "o1", CustomerID: "c1", Status: Cancelled, Reason: "customer_cancelled", Items: created(1).Items,
				Total: Money{2500, "EUR"}, Saga: "orchestrated", CreatedAt: t0, UpdatedAt: t0.Add(time.Minute), Version: 7, Created: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, p := range permutations(tt.events) {
				// Each event twice: once in place, once again at the end.
				o := Order{ID: "o1"}
				for _, ev := range append(append([]any{}, p...), p...) {
					o.Apply(ev)
				}
				if !reflect.DeepEqual(o, tt.want) {
					t.Fatalf("after %v:\n got %+v\nwant %+v", p, o, tt.want)
				}
			}
		})
	}
}

func TestOrder_StaleAndRepeatedEventsChangeNothing(t *testing.T) {
	o := Order{ID: "o1"}
	if !o.Apply(created(1)) || !o.Apply(confirmed(4)) {
		t.Fatal("new events reported no change")
	}
	before := o
	for _, ev := range []any{created(1), confirmed(4), confirmed(3), cancelled(2, "timeout")} {
		if o.Apply(ev) {
			t.Fatalf("%T reported a change", ev)
		}
	}
	if !reflect.DeepEqual(o, before) {
		t.Fatalf("row changed: %+v, was %+v", o, before)
	}
}

// A status event before order.created makes an incomplete row that holds
// the status; order.created completes it without taking the status back.
func TestOrder_EventBeforeCreatedIsKeptUntilCreatedArrives(t *testing.T) {
	o := Order{ID: "o1"}
	o.Apply(confirmed(4))
	if o.Created || o.Status != Confirmed || o.CustomerID != "c1" || o.Version != 4 {
		t.Fatalf("row from order.confirmed alone: %+v", o)
	}
	o.Apply(created(1))
	if !o.Created || o.Status != Confirmed || o.Total.Amount != 2500 || !o.CreatedAt.Equal(t0) {
		t.Fatalf("after order.created: %+v", o)
	}
}

// Events without a version (published before events carried one) still
// never move the status backwards.
func TestOrder_UnversionedEventsOnlyMoveForward(t *testing.T) {
	o := Order{ID: "o1"}
	for _, ev := range []any{created(0), confirmed(0), created(0), confirmed(0)} {
		o.Apply(ev)
	}
	if o.Status != Confirmed {
		t.Fatalf("status %s, want CONFIRMED", o.Status)
	}
	o.Apply(cancelled(0, "customer_cancelled"))
	o.Apply(confirmed(0))
	if o.Status != Cancelled {
		t.Fatalf("status %s, want CANCELLED", o.Status)
	}
}

func TestNextPaymentStatus(t *testing.T) {
	completed := PaymentEvent{Kind: KindCompleted, Amount: Money{2500, "EUR"}}
	declined := PaymentEvent{Kind: KindFailed, Reason: "payment_declined", Amount: Money{2500, "EUR"}}
	voided := PaymentEvent{Kind: KindFailed, Reason: "voided"}
	refunded := PaymentEvent{Kind: KindRefunded, Amount: Money{2500, "EUR"}}
	refundedNothing := PaymentEvent{Kind: KindRefunded, Amount: Money{0, "EUR"}}
	tests := []struct {
		name   string
		events []PaymentEvent
		want   string
	}{
		{"captured", []PaymentEvent{completed}, PaymentCaptured},
		{"declined", []PaymentEvent{declined}, PaymentDeclined},
		{"captured then refunded", []PaymentEvent{completed, refunded}, PaymentRefunded},
		{"a late copy of completed after the refund", []PaymentEvent{completed, refunded, completed}, PaymentRefunded},
		{"declined, then the compensation refunds nothing", []PaymentEvent{declined, refundedNothing}, PaymentDeclined},
		{"refunded before any charge, then the charge is voided", []PaymentEvent{refundedNothing, voided}, PaymentVoided},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ""
			for _, ev := range tt.events {
				s = NextPaymentStatus(s, ev)
			}
			if s != tt.want {
				t.Fatalf("status %q, want %q", s, tt.want)
			}
		})
	}
}

func TestCustomer_LateCopiesDoNotRevertARename(t *testing.T) {
	var c Customer
	registered := CustomerNamed{CustomerID: "c1", Name: "Ann", At: t0}
	renamed := CustomerNamed{CustomerID: "c1", Name: "Ann Smith", At: t0.Add(time.Hour)}
	if !c.Rename(registered) || !c.Rename(renamed) {
		t.Fatal("new names reported no change")
	}
	if c.Rename(registered) || c.Rename(renamed) || c.Name != "Ann Smith" {
		t.Fatalf("late copies: name %q", c.Name)
	}
}

func TestFacts_ConvergeAndDeriveOutcome(t *testing.T) {
	tests := []struct {
		name        string
		events      []any
		outcome     string
		duration    time.Duration
		hour        time.Time
		cancelledBy string
	}{
		{"confirmed", []any{created(1), confirmed(4)}, OutcomeConfirmed, 2 * time.Second, time.Date(2030, 5, 6, 7, 0, 0, 0, time.UTC), ""},
		{"declined", []any{created(1), cancelled(5, "payment_declined")}, OutcomeCancelled, time.Minute, time.Time{}, "payment_declined"},
		{"cancelled by the customer after confirmation", []any{created(1), confirmed(4), cancelled(7, "customer_cancelled")},
			OutcomeConfirmed, 2 * time.Second, time.Date(2030, 5, 6, 7, 0, 0, 0, time.UTC), "customer_cancelled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var first *Facts
			for _, p := range permutations(tt.events) {
				f := Facts{OrderID: "o1"}
				for _, ev := range append(append([]any{}, p...), p...) {
					f.Apply(ev)
				}
				outcome, _ := f.Outcome()
				d, ok := f.Duration()
				hour, _ := f.ConfirmedHour()
				if outcome != tt.outcome || !ok || d != tt.duration || !hour.Equal(tt.hour) || f.Reason != tt.cancelledBy {
					t.Fatalf("after %v: outcome %q, duration %s (%v), hour %s, reason %q", p, outcome, d, ok, hour, f.Reason)
				}
				if first != nil && !reflect.DeepEqual(f, *first) {
					t.Fatalf("facts depend on arrival order: %+v vs %+v", f, *first)
				}
				first = &f
			}
		})
	}
}

func TestFacts_NothingDerivedBeforeCreated(t *testing.T) {
	f := Facts{OrderID: "o1"}
	f.Apply(confirmed(4))
	if _, ok := f.Duration(); ok {
		t.Fatal("a duration without order.created")
	}
	if _, ok := f.ConfirmedHour(); ok {
		t.Fatal("an hour of revenue without the order's total")
	}
	if outcome, _ := f.Outcome(); outcome != OutcomeConfirmed {
		t.Fatalf("outcome %q", outcome)
	}
}

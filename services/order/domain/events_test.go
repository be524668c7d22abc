package domain

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"
)

// at returns a fixed UTC time, minutes after a base, with a nanosecond part
// so that a lost fraction would show.
func at(minutes int) time.Time {
	return time.Date(2025, 3, 14, 9, 26, 53, 589793238, time.UTC).Add(time.Duration(minutes) * time.Minute)
}

// esOrder returns a new order of two lines given out of product order, and
// its lines as NewOrder should keep them (sorted by product id).
func esOrder(t *testing.T, now time.Time) (*Order, []Line) {
	t.Helper()
	a, b := pid(), pid() // UUIDv7: a < b
	lines := []Line{
		{ProductID: b, Name: "Tee", Quantity: 1, UnitPrice: Money{2400, "EUR"}},
		{ProductID: a, Name: "Mug", Quantity: 2, UnitPrice: Money{1450, "EUR"}},
	}
	o, err := NewOrder("c1", lines, Orchestrated, now)
	if err != nil {
		t.Fatal(err)
	}
	return o, []Line{lines[1], lines[0]}
}

// diffOrders lists every accessor in which two orders differ.
func diffOrders(got, want *Order) []string {
	var d []string
	check := func(name string, equal bool, g, w any) {
		if !equal {
			d = append(d, fmt.Sprintf("%s: got %v, want %v", name, g, w))
		}
	}
	check("ID", got.ID() == want.ID(), got.ID(), want.ID())
	check("CustomerID", got.CustomerID() == want.CustomerID(), got.CustomerID(), want.CustomerID())
	check("Status", got.Status() == want.Status(), got.Status(), want.Status())
	check("Reason", got.Reason() == want.Reason(), got.Reason(), want.Reason())
	check("Lines", slices.Equal(got.Lines(), want.Lines()), got.Lines(), want.Lines())
	check("Total", got.Total() == want.Total(), got.Total(), want.Total())
	check("Saga", got.Saga() == want.Saga(), got.Saga(), want.Saga())
	gs, ws := got.Shipment(), want.Shipment()
	check("Shipment", gs.ID == ws.ID && gs.TrackingNumber == ws.TrackingNumber && gs.ShippedAt.Equal(ws.ShippedAt), gs, ws)
	check("Version", got.Version() == want.Version(), got.Version(), want.Version())
	check("CreatedAt", got.CreatedAt().Equal(want.CreatedAt()), got.CreatedAt(), want.CreatedAt())
	check("UpdatedAt", got.UpdatedAt().Equal(want.UpdatedAt()), got.UpdatedAt(), want.UpdatedAt())
	return d
}

func types(events []Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.Type()
	}
	return out
}

func TestNewOrder_RecordsOneOrderCreated(t *testing.T) {
	now := at(0).In(time.FixedZone("CET", 3600))
	o, sorted := esOrder(t, now)
	changes := o.Changes()
	if len(changes) != 1 {
		t.Fatalf("changes %v, want one order.created", types(changes))
	}
	created, ok := changes[0].(OrderCreated)
	if !ok {
		t.Fatalf("first change is %T, want OrderCreated", changes[0])
	}
	want := OrderCreated{CustomerID: "c1", Lines: sorted, Total: Money{5300, "EUR"}, Saga: Orchestrated, At: at(0)}
	if !reflect.DeepEqual(created, want) || created.At.Location() != time.UTC {
		t.Errorf("recorded %+v, want %+v", created, want)
	}
	if created.Type() != TypeCreated || !created.When().Equal(at(0)) {
		t.Errorf("type %s when %v", created.Type(), created.When())
	}
	if o.Version() != 1 || o.Status() != Pending || !o.CreatedAt().Equal(at(0)) || !o.UpdatedAt().Equal(at(0)) ||
		o.CreatedAt().Location() != time.UTC || o.ID() == "" || !slices.Equal(o.Lines(), sorted) {
		t.Errorf("new order: version %d status %s created %v updated %v id %q lines %v",
			o.Version(), o.Status(), o.CreatedAt(), o.UpdatedAt(), o.ID(), o.Lines())
	}
	// Changes is a copy: a caller cannot drop what the store must write.
	changes[0] = OrderConfirmed{}
	if got := o.Changes(); len(got) != 1 || got[0].Type() != TypeCreated {
		t.Errorf("changes after editing a returned slice: %v", types(got))
	}
}

func TestOrder_CommandsRecordEvents(t *testing.T) {
	t.Run("confirm then ship", func(t *testing.T) {
		o, _ := esOrder(t, at(0))
		if err := o.Confirm(at(1)); err != nil {
			t.Fatal(err)
		}
		if o.Status() != Confirmed || o.Version() != 2 || !o.UpdatedAt().Equal(at(1)) || !o.CreatedAt().Equal(at(0)) {
			t.Fatalf("confirmed: %s v%d updated %v", o.Status(), o.Version(), o.UpdatedAt())
		}
		if err := o.Ship("s1", "MRC1", at(2).In(time.FixedZone("X", -7200))); err != nil {
			t.Fatal(err)
		}
		if o.Status() != Shipped || o.Version() != 3 || !o.UpdatedAt().Equal(at(2)) {
			t.Fatalf("shipped: %s v%d updated %v", o.Status(), o.Version(), o.UpdatedAt())
		}
		if sh := o.Shipment(); sh.ID != "s1" || sh.TrackingNumber != "MRC1" || !sh.ShippedAt.Equal(at(2)) || sh.ShippedAt.Location() != time.UTC {
			t.Fatalf("shipment %+v", sh)
		}
		changes := o.Changes()
		if !slices.Equal(types(changes), []string{TypeCreated, TypeConfirmed, TypeShipped}) {
			t.Fatalf("changes %v", types(changes))
		}
		if c, ok := changes[1].(OrderConfirmed); !ok || !c.At.Equal(at(1)) {
			t.Errorf("confirmed event %+v", changes[1])
		}
		if s, ok := changes[2].(OrderShipped); !ok || s != (OrderShipped{ShipmentID: "s1", TrackingNumber: "MRC1", At: at(2)}) {
			t.Errorf("shipped event %+v", changes[2])
		}
	})
	t.Run("cancel pending", func(t *testing.T) {
		o, _ := esOrder(t, at(0))
		if err := o.Cancel(ReasonOutOfStock, at(3)); err != nil {
			t.Fatal(err)
		}
		if o.Status() != Cancelled || o.Reason() != ReasonOutOfStock || o.Version() != 2 || !o.UpdatedAt().Equal(at(3)) {
			t.Fatalf("cancelled: %s %q v%d updated %v", o.Status(), o.Reason(), o.Version(), o.UpdatedAt())
		}
		changes := o.Changes()
		if len(changes) != 2 || changes[1] != (OrderCancelled{Reason: ReasonOutOfStock, At: at(3)}) {
			t.Fatalf("changes %+v", changes)
		}
	})
	t.Run("cancel confirmed", func(t *testing.T) {
		o, _ := esOrder(t, at(0))
		if err := o.Confirm(at(1)); err != nil {
			t.Fatal(err)
		}
		if err := o.Cancel(ReasonCustomerCancelled, at(2)); err != nil {
			t.Fatal(err)
		}
		if o.Status() != Cancelled || o.Version() != 3 ||
			!slices.Equal(types(o.Changes()), []string{TypeCreated, TypeConfirmed, TypeCancelled}) {
			t.Fatalf("cancelled: %s v%d %v", o.Status(), o.Version(), types(o.Changes()))
		}
	})
}

func TestOrder_InvalidTransitionsRecordNothing(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(o *Order) error
		act   func(o *Order) error
	}{
		{"ship a pending order", nil, func(o *Order) error { return o.Ship("s1", "T1", at(9)) }},
		{"ship a cancelled order",
			func(o *Order) error { return o.Cancel(ReasonOutOfStock, at(1)) },
			func(o *Order) error { return o.Ship("s1", "T1", at(9)) }},
		{"ship a shipped order",
			func(o *Order) error { return errors.Join(o.Confirm(at(1)), o.Ship("s1", "T1", at(2))) },
			func(o *Order) error { return o.Ship("s2", "T2", at(9)) }},
		{"confirm twice",
			func(o *Order) error { return o.Confirm(at(1)) },
			func(o *Order) error { return o.Confirm(at(9)) }},
		{"confirm a cancelled order",
			func(o *Order) error { return o.Cancel(ReasonOutOfStock, at(1)) },
			func(o *Order) error { return o.Confirm(at(9)) }},
		{"cancel a shipped order",
			func(o *Order) error { return errors.Join(o.Confirm(at(1)), o.Ship("s1", "T1", at(2))) },
			func(o *Order) error { return o.Cancel(ReasonCustomerCancelled, at(9)) }},
		{"cancel a cancelled order",
			func(o *Order) error { return o.Cancel(ReasonOutOfStock, at(1)) },
			func(o *Order) error { return o.Cancel(ReasonCustomerCancelled, at(9)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, _ := esOrder(t, at(0))
			if tc.setup != nil {
				if err := tc.setup(o); err != nil {
					t.Fatal(err)
				}
			}
			before := Restore(o.ID(), o.CustomerID(), o.Status(), o.Reason(), o.Lines(), o.Total(), o.Saga(), o.Shipment(),
				o.Version(), o.CreatedAt(), o.UpdatedAt())
			changes := types(o.Changes())
			if err := tc.act(o); !errors.Is(err, ErrInvalidTransition) {
				t.Fatalf("err = %v, want ErrInvalidTransition", err)
			}
			if got := types(o.Changes()); !slices.Equal(got, changes) {
				t.Errorf("changes %v, were %v", got, changes)
			}
			if d := diffOrders(o, before); d != nil {
				t.Errorf("a refused command changed the order: %v", d)
			}
		})
	}
}

func TestReplay_RebuildsTheOrder(t *testing.T) {
	for _, tc := range []struct {
		name string
		act  func(o *Order) error
	}{
		{"pending", func(*Order) error { return nil }},
		{"confirmed", func(o *Order) error { return o.Confirm(at(1)) }},
		{"cancelled while pending", func(o *Order) error { return o.Cancel(ReasonPaymentDeclined, at(1)) }},
		{"cancelled when confirmed", func(o *Order) error {
			return errors.Join(o.Confirm(at(1)), o.Cancel(ReasonCustomerCancelled, at(2)))
		}},
		{"shipped", func(o *Order) error { return errors.Join(o.Confirm(at(1)), o.Ship("s1", "MRC1", at(2))) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, _ := esOrder(t, at(0))
			if err := tc.act(o); err != nil {
				t.Fatal(err)
			}
			got, err := Replay(o.ID(), nil, o.Changes())
			if err != nil {
				t.Fatal(err)
			}
			if d := diffOrders(got, o); d != nil {
				t.Errorf("replay differs: %v", d)
			}
			if c := got.Changes(); len(c) != 0 {
				t.Errorf("a replayed order has changes to store: %v", types(c))
			}
			// A replayed order records new events after the stored ones.
			if got.Status() == Pending {
				if err := got.Confirm(at(5)); err != nil || got.Version() != o.Version()+1 ||
					!slices.Equal(types(got.Changes()), []string{TypeConfirmed}) {
					t.Errorf("confirm after replay: %v v%d %v", err, got.Version(), types(got.Changes()))
				}
			}
		})
	}
}

func TestReplay_ContinuesFromASnapshot(t *testing.T) {
	o, _ := esOrder(t, at(0))
	if err := o.Confirm(at(1)); err != nil {
		t.Fatal(err)
	}
	if err := o.Ship("s1", "MRC1", at(2)); err != nil {
		t.Fatal(err)
	}
	events := o.Changes()
	for k := 1; k <= len(events); k++ {
		t.Run(fmt.Sprintf("snapshot at %d", k), func(t *testing.T) {
			upTo, err := Replay(o.ID(), nil, events[:k])
			if err != nil {
				t.Fatal(err)
			}
			snap := Restore(upTo.ID(), upTo.CustomerID(), upTo.Status(), upTo.Reason(), upTo.Lines(), upTo.Total(), upTo.Saga(),
				upTo.Shipment(), upTo.Version(), upTo.CreatedAt(), upTo.UpdatedAt())
			got, err := Replay(o.ID(), snap, events[k:])
			if err != nil {
				t.Fatal(err)
			}
			if d := diffOrders(got, o); d != nil {
				t.Errorf("snapshot + replay differs: %v", d)
			}
			if c := got.Changes(); len(c) != 0 {
				t.Errorf("changes after replay: %v", types(c))
			}
		})
	}
	t.Run("an OrderCreated after a snapshot", func(t *testing.T) {
		snap := Restore(o.ID(), "c1", Confirmed, "", o.Lines(), o.Total(), Orchestrated, Shipment{}, 2, at(0), at(1))
		if _, err := Replay(o.ID(), snap, events[:1]); !errors.Is(err, ErrCorruptStream) {
			t.Errorf("err = %v, want ErrCorruptStream", err)
		}
	})
}

func TestReplay_RejectsStreamsNoOrderHas(t *testing.T) {
	o, _ := esOrder(t, at(0))
	if err := o.Confirm(at(1)); err != nil {
		t.Fatal(err)
	}
	events := o.Changes()
	if _, err := Replay(o.ID(), nil, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("empty stream: %v, want ErrNotFound", err)
	}
	if _, err := Replay(o.ID(), nil, []Event{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("empty stream: %v, want ErrNotFound", err)
	}
	for name, stream := range map[string][]Event{
		"starts with order.confirmed": events[1:],
		"starts with order.cancelled": {OrderCancelled{Reason: ReasonOutOfStock, At: at(1)}},
		"created twice":               {events[0], events[0]},
		"created again later":         {events[0], events[1], events[0]},
	} {
		got, err := Replay(o.ID(), nil, stream)
		if !errors.Is(err, ErrCorruptStream) || got != nil {
			t.Errorf("%s: %v, %v; want ErrCorruptStream", name, got, err)
		}
		if errors.Is(err, ErrNotFound) {
			t.Errorf("%s: a corrupt stream reads as a missing order", name)
		}
	}
}

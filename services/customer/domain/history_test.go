package domain

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestOrderEvents_RejectWhatCanNeverBeApplied(t *testing.T) {
	now := time.Now()
	eur := Money{Amount: 1450, Currency: "EUR"}
	tests := []struct {
		name  string
		build func() (OrderEvent, error)
		valid bool
	}{
		{"placed", func() (OrderEvent, error) { return OrderPlaced("o1", "c1", eur, 2, 1, now) }, true},
		{"placed without a version", func() (OrderEvent, error) { return OrderPlaced("o1", "c1", eur, 2, 0, now) }, true},
		{"placed without an order id", func() (OrderEvent, error) { return OrderPlaced("", "c1", eur, 2, 1, now) }, false},
		{"placed without a customer", func() (OrderEvent, error) { return OrderPlaced("o1", "", eur, 2, 1, now) }, false},
		{"placed without items", func() (OrderEvent, error) { return OrderPlaced("o1", "c1", eur, 0, 1, now) }, false},
		{"placed without a currency", func() (OrderEvent, error) { return OrderPlaced("o1", "c1", Money{Amount: 1}, 2, 1, now) }, false},
		{"placed with a negative total", func() (OrderEvent, error) { return OrderPlaced("o1", "c1", Money{-1, "EUR"}, 2, 1, now) }, false},
		{"placed without a time", func() (OrderEvent, error) { return OrderPlaced("o1", "c1", eur, 2, 1, time.Time{}) }, false},
		{"placed with a negative version", func() (OrderEvent, error) { return OrderPlaced("o1", "c1", eur, 2, -1, now) }, false},
		{"shipped", func() (OrderEvent, error) { return OrderChanged("o1", "c1", OrderShipped, "", 3, now) }, true},
		{"changed to pending", func() (OrderEvent, error) { return OrderChanged("o1", "c1", OrderPending, "", 1, now) }, false},
		{"changed to an unknown status", func() (OrderEvent, error) { return OrderChanged("o1", "c1", "LOST", "", 2, now) }, false},
		{"changed without a customer", func() (OrderEvent, error) { return OrderChanged("o1", "", OrderConfirmed, "", 2, now) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.build()
			if tt.valid && err != nil {
				t.Fatalf("rejected: %v", err)
			}
			if !tt.valid && !errors.Is(err, ErrInvalidOrderEvent) {
				t.Fatalf("want ErrInvalidOrderEvent, got %v", err)
			}
		})
	}
}

// Without versions, every path of the lifecycle still goes forward.
func TestOrderEvent_OrdinalIsTheVersionOrElseTheStatusRank(t *testing.T) {
	now := time.Now()
	ordinal := func(status OrderStatus, version int64) int64 {
		t.Helper()
		var (
			e   OrderEvent
			err error
		)
		if status == OrderPending {
			e, err = OrderPlaced("o1", "c1", Money{1, "EUR"}, 1, version, now)
		} else {
			e, err = OrderChanged("o1", "c1", status, "", version, now)
		}
		if err != nil {
			t.Fatal(err)
		}
		return e.Ordinal()
	}
	if got := ordinal(OrderConfirmed, 7); got != 7 {
		t.Fatalf("versioned ordinal %d, want the version 7", got)
	}
	for _, path := range [][]OrderStatus{
		{OrderPending, OrderConfirmed, OrderShipped},
		{OrderPending, OrderCancelled},
		{OrderPending, OrderConfirmed, OrderCancelled},
	} {
		for i := 1; i < len(path); i++ {
			if before, after := ordinal(path[i-1], 0), ordinal(path[i], 0); before >= after {
				t.Errorf("%s (%d) does not come before %s (%d)", path[i-1], before, path[i], after)
			}
		}
	}
}

func TestOrderEvent_CreatedAtOfALaterEventComesFromTheOrderID(t *testing.T) {
	id := uuid.Must(uuid.NewV7())
	sec, nsec := id.Time().UnixTime()
	fromID := time.Unix(sec, nsec).UTC()
	later := fromID.Add(time.Hour)

	e, err := OrderChanged(id.String(), "c1", OrderShipped, "", 3, later)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.CreatedAt(); !got.Equal(fromID) {
		t.Fatalf("created at %v, want %v from the UUIDv7 id", got, fromID)
	}
	e, _ = OrderChanged("not-a-uuid", "c1", OrderShipped, "", 3, later)
	if got := e.CreatedAt(); !got.Equal(later) {
		t.Fatalf("created at %v, want the event's time %v for an id without one", got, later)
	}
	e, _ = OrderPlaced(id.String(), "c1", Money{1, "EUR"}, 1, 1, later)
	if got := e.CreatedAt(); !got.Equal(later) {
		t.Fatalf("order.created's creation time %v, want its own %v", got, later)
	}
	e, _ = OrderChanged(id.String(), "c1", OrderConfirmed, "ignored", 2, later)
	if e.Reason() != "" {
		t.Fatalf("a confirmation kept the reason %q", e.Reason())
	}
}

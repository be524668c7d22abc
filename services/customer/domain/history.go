package domain

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// OrderStatus is where an order stands, as the order context announced it.
type OrderStatus string

// The statuses of the order lifecycle: PENDING, then CONFIRMED, then
// SHIPPED; PENDING or CONFIRMED may end CANCELLED instead.
const (
	OrderPending   OrderStatus = "PENDING"
	OrderConfirmed OrderStatus = "CONFIRMED"
	OrderCancelled OrderStatus = "CANCELLED"
	OrderShipped   OrderStatus = "SHIPPED"
)

// rank orders the statuses along every path the lifecycle allows.
func (s OrderStatus) rank() int64 {
	switch s {
	case OrderPending:
		return 1
	case OrderConfirmed:
		return 2
	case OrderCancelled, OrderShipped:
		return 3
	}
	return 0
}

// Money is an amount in minor units of an ISO 4217 currency.
type Money struct {
	Amount   int64
	Currency string
}

// ErrInvalidOrderEvent: an order event that the history can never apply.
var ErrInvalidOrderEvent = errors.New("invalid order event")

// OrderEvent is what one event of the order context tells a customer's
// order history. Build one with OrderPlaced or OrderChanged.
type OrderEvent struct {
	orderID    string
	customerID string
	status     OrderStatus
	reason     string
	version    int64
	at         time.Time
	// Known from order.created only.
	placed    bool
	total     Money
	itemCount int64
}

// OrderPlaced is order.created: the order, PENDING, with its total and the
// number of items (the sum of its lines' quantities). version is the order's
// version after the event, 0 when the publisher did not send one.
func OrderPlaced(orderID, customerID string, total Money, itemCount, version int64, createdAt time.Time) (OrderEvent, error) {
	e := OrderEvent{
		orderID: orderID, customerID: customerID, status: OrderPending, version: version, at: createdAt.UTC(),
		placed: true, total: total, itemCount: itemCount,
	}
	if err := e.validate(); err != nil {
		return OrderEvent{}, err
	}
	return e, nil
}

// OrderChanged is order.confirmed, order.cancelled (with its reason) or
// order.shipped: the order moved to status at the given time.
func OrderChanged(orderID, customerID string, status OrderStatus, reason string, version int64, at time.Time) (OrderEvent, error) {
	if status == OrderPending {
		return OrderEvent{}, fmt.Errorf("%w: only order.created makes an order %s", ErrInvalidOrderEvent, OrderPending)
	}
	if status != OrderCancelled {
		reason = ""
	}
	e := OrderEvent{orderID: orderID, customerID: customerID, status: status, reason: reason, version: version, at: at.UTC()}
	if err := e.validate(); err != nil {
		return OrderEvent{}, err
	}
	return e, nil
}

func (e OrderEvent) validate() error {
	var problems []string
	if e.orderID == "" {
		problems = append(problems, "no order id")
	}
	if e.customerID == "" {
		problems = append(problems, "no customer id")
	}
	if e.status.rank() == 0 {
		problems = append(problems, fmt.Sprintf("unknown status %q", e.status))
	}
	if e.version < 0 {
		problems = append(problems, "negative version")
	}
	if e.at.IsZero() {
		problems = append(problems, "no time")
	}
	if e.placed {
		if e.total.Amount < 0 {
			problems = append(problems, "negative total")
		}
		if len(e.total.Currency) != 3 {
			problems = append(problems, fmt.Sprintf("currency %q is not an ISO 4217 code", e.total.Currency))
		}
		if e.itemCount <= 0 {
			problems = append(problems, "no items")
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %v", ErrInvalidOrderEvent, problems)
	}
	return nil
}

func (e OrderEvent) OrderID() string     { return e.orderID }
func (e OrderEvent) CustomerID() string  { return e.customerID }
func (e OrderEvent) Status() OrderStatus { return e.status }
func (e OrderEvent) Reason() string      { return e.reason }

// At is when the event happened: the order's creation for order.created.
func (e OrderEvent) At() time.Time { return e.at }

// Placed reports whether the event is order.created, which alone knows the
// total, the item count and the creation time.
func (e OrderEvent) Placed() bool     { return e.placed }
func (e OrderEvent) Total() Money     { return e.total }
func (e OrderEvent) ItemCount() int64 { return e.itemCount }
func (e OrderEvent) Version() int64   { return e.version }

// Ordinal places the event among the events of its order: the history
// applies an event only over an older one, so duplicates and late
// redeliveries never take an order back. It is the order's version after
// the event; events published before orders had versions carry none and
// rank by status, which orders every path the lifecycle allows.
func (e OrderEvent) Ordinal() int64 {
	if e.version > 0 {
		return e.version
	}
	return e.status.rank()
}

// CreatedAt is when the order was created: exact for order.created. Other
// events do not say; for them it is the time in the order's UUIDv7 id, or
// else the event's own time, so that an order heard of before its
// order.created still sorts about where it belongs in the history.
func (e OrderEvent) CreatedAt() time.Time {
	if e.placed {
		return e.at
	}
	if id, err := uuid.Parse(e.orderID); err == nil && id.Version() == 7 {
		sec, nsec := id.Time().UnixTime()
		return time.Unix(sec, nsec).UTC()
	}
	return e.at
}

// OrderSummary is one order of a customer's history.
type OrderSummary struct {
	ID        string
	Status    OrderStatus
	Reason    string // why it was CANCELLED
	Total     Money
	ItemCount int64
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Package domain is the order context's model: the Order aggregate with its
// lifecycle, and the orchestrated saga that carries an order through
// inventory and payment. It does no I/O.
package domain

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/google/uuid"
)

// Order limits.
const (
	MaxLines    = 50
	MaxQuantity = 100
)

// Status of an order.
type Status string

const (
	Pending   Status = "PENDING"
	Confirmed Status = "CONFIRMED"
	Shipped   Status = "SHIPPED"
	Cancelled Status = "CANCELLED"
)

// Reasons an order is cancelled.
const (
	ReasonPaymentDeclined = "payment_declined"
	// ReasonPaymentUnavailable: the payment provider was down and the
	// charge was never made; the customer may order again later.
	ReasonPaymentUnavailable = "payment_unavailable"
	ReasonOutOfStock         = "out_of_stock"
)

// Saga modes.
const (
	Orchestrated  = "orchestrated"
	Choreographed = "choreographed"
)

var (
	// ErrNotFound: no such order (or not the caller's).
	ErrNotFound = errors.New("order not found")
	// ErrInvalidTransition: the order's status does not allow the change.
	ErrInvalidTransition = errors.New("invalid order transition")
	// ErrIdempotencyMismatch: an Idempotency-Key was used with another request.
	ErrIdempotencyMismatch = errors.New("idempotency key reused with a different request")
	// ErrConflict: the order changed since it was read.
	ErrConflict = errors.New("order changed concurrently")
)

// Money is an amount in minor units of an ISO 4217 currency.
type Money struct {
	Amount   int64
	Currency string
}

// Line is a quantity of one product at the price it had when ordered.
type Line struct {
	ProductID string
	Name      string
	Quantity  int64
	UnitPrice Money
}

// FieldError names one invalid field of a request.
type FieldError struct {
	Field   string
	Message string
}

// ValidationError lists what is wrong with a request.
type ValidationError struct {
	Fields []FieldError
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("invalid order: %d invalid fields, first %s %s", len(e.Fields), e.Fields[0].Field, e.Fields[0].Message)
}

// Item is what a customer asks for.
type Item struct {
	ProductID string
	Quantity  int64
}

// ValidateItems checks the shape of a request: 1 to MaxLines lines, each a
// product id and a quantity of 1 to MaxQuantity. Repeats of a product are
// merged.
func ValidateItems(items []Item) ([]Item, error) {
	var errs []FieldError
	switch {
	case len(items) == 0:
		errs = append(errs, FieldError{"items", "must hold at least one line"})
	case len(items) > MaxLines:
		errs = append(errs, FieldError{"items", fmt.Sprintf("must hold at most %d lines", MaxLines)})
	}
	merged := map[string]int64{}
	var order []string
	for i, it := range items {
		if _, err := uuid.Parse(it.ProductID); err != nil {
			errs = append(errs, FieldError{fmt.Sprintf("items[%d].product_id", i), "must be a product id"})
		}
		if it.Quantity < 1 || it.Quantity > MaxQuantity {
			errs = append(errs, FieldError{fmt.Sprintf("items[%d].quantity", i), fmt.Sprintf("must be 1 to %d", MaxQuantity)})
		}
		if _, seen := merged[it.ProductID]; !seen {
			order = append(order, it.ProductID)
		}
		merged[it.ProductID] += it.Quantity
	}
	for _, id := range order {
		if merged[id] > MaxQuantity && len(errs) == 0 {
			errs = append(errs, FieldError{"items", fmt.Sprintf("product %s: at most %d in total", id, MaxQuantity)})
		}
	}
	if len(errs) > 0 {
		return nil, &ValidationError{Fields: errs}
	}
	out := make([]Item, len(order))
	for i, id := range order {
		out[i] = Item{ProductID: id, Quantity: merged[id]}
	}
	return out, nil
}

// Order is the aggregate, event-sourced: its state is what its events say,
// applied in order (see events.go). Build one with NewOrder, Replay, or
// Restore from a snapshot. Commands (Confirm, Cancel, Ship) check the state
// and record a new event; Changes returns those not yet stored.
type Order struct {
	id         string
	customerID string
	status     Status
	reason     string
	lines      []Line
	total      Money
	saga       string
	shipment   Shipment
	version    int64
	createdAt  time.Time
	updatedAt  time.Time

	changes []Event
}

// Shipment is how a shipped order left the warehouse.
type Shipment struct {
	ID             string
	TrackingNumber string
	ShippedAt      time.Time
}

// NewOrder opens a PENDING order. Lines carry the prices the catalog gave,
// all in one currency.
func NewOrder(customerID string, lines []Line, saga string, now time.Time) (*Order, error) {
	if customerID == "" {
		return nil, errors.New("new order: no customer")
	}
	if len(lines) == 0 || len(lines) > MaxLines {
		return nil, &ValidationError{Fields: []FieldError{{"items", fmt.Sprintf("must hold 1 to %d lines", MaxLines)}}}
	}
	if saga != Orchestrated && saga != Choreographed {
		return nil, &ValidationError{Fields: []FieldError{{"saga", "must be orchestrated or choreographed"}}}
	}
	total := Money{Currency: lines[0].UnitPrice.Currency}
	for _, l := range lines {
		if l.UnitPrice.Currency != total.Currency {
			return nil, fmt.Errorf("new order: lines in %s and %s", total.Currency, l.UnitPrice.Currency)
		}
		total.Amount += l.UnitPrice.Amount * l.Quantity
	}
	sorted := append([]Line(nil), lines...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].ProductID < sorted[j].ProductID })
	o := &Order{id: uuid.Must(uuid.NewV7()).String()}
	o.raise(OrderCreated{CustomerID: customerID, Lines: sorted, Total: total, Saga: saga, At: now.UTC()})
	return o, nil
}

// Restore rebuilds an order from a snapshot of its state at version.
func Restore(id, customerID string, status Status, reason string, lines []Line, total Money, saga string, shipment Shipment, version int64, createdAt, updatedAt time.Time) *Order {
	return &Order{id: id, customerID: customerID, status: status, reason: reason, lines: lines, total: total,
		saga: saga, shipment: shipment, version: version, createdAt: createdAt.UTC(), updatedAt: updatedAt.UTC()}
}

// Confirm moves a PENDING order to CONFIRMED.
func (o *Order) Confirm(now time.Time) error {
	if o.status != Pending {
		return fmt.Errorf("%w: confirm a %s order", ErrInvalidTransition, o.status)
	}
	o.raise(OrderConfirmed{At: now.UTC()})
	return nil
}

// Cancel moves a PENDING or CONFIRMED order to CANCELLED with a reason.
func (o *Order) Cancel(reason string, now time.Time) error {
	if o.status != Pending && o.status != Confirmed {
		return fmt.Errorf("%w: cancel a %s order", ErrInvalidTransition, o.status)
	}
	o.raise(OrderCancelled{Reason: reason, At: now.UTC()})
	return nil
}

// Ship moves a CONFIRMED order to SHIPPED.
func (o *Order) Ship(shipmentID, trackingNumber string, now time.Time) error {
	if o.status != Confirmed {
		return fmt.Errorf("%w: ship a %s order", ErrInvalidTransition, o.status)
	}
	o.raise(OrderShipped{ShipmentID: shipmentID, TrackingNumber: trackingNumber, At: now.UTC()})
	return nil
}

// raise applies a new event and keeps it for the store.
func (o *Order) raise(e Event) {
	o.apply(e)
	o.changes = append(o.changes, e)
}

// Changes returns the events recorded since the order was built, oldest
// first; the order's version counts them already.
func (o *Order) Changes() []Event { return append([]Event(nil), o.changes...) }

func (o *Order) ID() string           { return o.id }
func (o *Order) CustomerID() string   { return o.customerID }
func (o *Order) Status() Status       { return o.status }
func (o *Order) Reason() string       { return o.reason }
func (o *Order) Lines() []Line        { return append([]Line(nil), o.lines...) }
func (o *Order) Total() Money         { return o.total }
func (o *Order) Saga() string         { return o.saga }
func (o *Order) Shipment() Shipment   { return o.shipment }
func (o *Order) Version() int64       { return o.version }
func (o *Order) CreatedAt() time.Time { return o.createdAt }
func (o *Order) UpdatedAt() time.Time { return o.updatedAt }

// Package domain holds the rules of orderview's read models: how each event
// changes an order's row, a customer's name, an order's payment status and
// an order's analytics facts, so that a repeated or late event never
// regresses what is shown and the rows converge whatever the arrival order.
//
// Rows here are data, copies of facts other contexts own, not aggregates
// guarding invariants: their fields are exported, and the Apply methods are
// the only rules.
package domain

import "time"

// Money is an amount in minor units of an ISO 4217 currency.
type Money struct {
	Amount   int64
	Currency string
}

// Line is one line of an order, with the product's name at order time.
type Line struct {
	ProductID string
	Name      string
	Quantity  int64
	UnitPrice Money
}

// Shipment is how a shipped order left the warehouse.
type Shipment struct {
	ID             string
	TrackingNumber string
	ShippedAt      time.Time
}

// Order statuses, as the order context names them.
const (
	Pending   = "PENDING"
	Confirmed = "CONFIRMED"
	Shipped   = "SHIPPED"
	Cancelled = "CANCELLED"
)

// The order context's events, as the read models see them. Version is the
// order's version after the event (its place in the order's event stream);
// 0 when the publisher did not say.
type (
	// OrderCreated is order.created.
	OrderCreated struct {
		OrderID, CustomerID string
		Items               []Line
		Total               Money
		Saga                string
		CreatedAt           time.Time
		Version             int64
	}
	// OrderConfirmed is order.confirmed.
	OrderConfirmed struct {
		OrderID, CustomerID string
		ConfirmedAt         time.Time
		Version             int64
	}
	// OrderCancelled is order.cancelled.
	OrderCancelled struct {
		OrderID, CustomerID, Reason string
		CancelledAt                 time.Time
		Version                     int64
	}
	// OrderShipped is order.shipped.
	OrderShipped struct {
		OrderID, CustomerID string
		Shipment            Shipment
		Version             int64
	}
)

// Order is one row of the order read model.
//
// A row can exist before its order.created: when a later event comes first
// it holds that event's status, and order.created fills in the rest when it
// arrives. Such a row is not Created and is not listed until then.
type Order struct {
	ID            string
	CustomerID    string
	CustomerName  string
	Status        string
	Reason        string
	Items         []Line
	Total         Money
	Saga          string
	PaymentStatus string
	Shipment      *Shipment
	CreatedAt     time.Time
	UpdatedAt     time.Time
	Version       int64
	// Created: order.created has been applied.
	Created bool
}

// Apply applies an order event to o and reports whether o changed. What an
// event says once and for all (the lines and total of order.created, the
// shipment of order.shipped) is kept whenever it arrives; the status moves
// only forward in version, so a stale or repeated event leaves it as it is.
// Events of other types are ignored.
func (o *Order) Apply(ev any) bool {
	changed := false
	switch e := ev.(type) {
	case OrderCreated:
		changed = o.learnCustomer(e.CustomerID)
		if !o.Created {
			o.Items, o.Total, o.Saga, o.CreatedAt, o.Created = e.Items, e.Total, e.Saga, e.CreatedAt, true
			changed = true
		}
		return o.advance(e.Version, Pending, "", e.CreatedAt) || changed
	case OrderConfirmed:
		changed = o.learnCustomer(e.CustomerID)
		return o.advance(e.Version, Confirmed, "", e.ConfirmedAt) || changed
	case OrderCancelled:
		changed = o.learnCustomer(e.CustomerID)
		return o.advance(e.Version, Cancelled, e.Reason, e.CancelledAt) || changed
	case OrderShipped:
		changed = o.learnCustomer(e.CustomerID)
		if o.Shipment == nil {
			s := e.Shipment
			o.Shipment, changed = &s, true
		}
		return o.advance(e.Version, Shipped, "", e.Shipment.ShippedAt) || changed
	}
	return false
}

func (o *Order) learnCustomer(id string) bool {
	if o.CustomerID != "" || id == "" {
		return false
	}
	o.CustomerID = id
	return true
}

// statusRank orders statuses for events without a version: an order only
// moves forward through them.
func statusRank(status string) int {
	switch status {
	case Pending:
		return 1
	case Confirmed:
		return 2
	case Shipped, Cancelled:
		return 3
	}
	return 0
}

// advance moves the status when the event is newer than what o shows.
func (o *Order) advance(version int64, status, reason string, at time.Time) bool {
	newer := version > o.Version
	if version == 0 {
		// Events published before they carried versions: keep the furthest
		// status, so that at least nothing goes backwards.
		newer = o.Version == 0 && statusRank(status) > statusRank(o.Status)
	}
	if !newer {
		return false
	}
	o.Status, o.Reason, o.UpdatedAt, o.Version = status, reason, at, version
	return true
}

// PaymentKind is what a payment event says.
type PaymentKind int

// Payment events.
const (
	KindCompleted PaymentKind = iota + 1 // payment.completed
	KindFailed                           // payment.failed
	KindRefunded                         // payment.refunded
)

// PaymentEvent is payment.completed, payment.failed or payment.refunded.
type PaymentEvent struct {
	OrderID string
	Kind    PaymentKind
	// Reason of a failure: payment_declined, voided, ...
	Reason string
	Amount Money
}

// Payment statuses an order shows, as the payment context names them.
const (
	PaymentCaptured = "CAPTURED"
	PaymentDeclined = "DECLINED"
	PaymentRefunded = "REFUNDED"
	PaymentVoided   = "VOIDED"
)

// paymentRank: a capture is superseded by its refund, and a final status
// (declined, voided, refunded) by nothing, so a late copy of
// payment.completed does not bring a refunded payment back.
func paymentRank(status string) int {
	switch status {
	case PaymentCaptured:
		return 1
	case PaymentDeclined, PaymentVoided, PaymentRefunded:
		return 2
	}
	return 0
}

// NextPaymentStatus is the payment status an order shows after ev, given
// the one it showed ("" for none).
func NextPaymentStatus(current string, ev PaymentEvent) string {
	var next string
	switch ev.Kind {
	case KindCompleted:
		next = PaymentCaptured
	case KindFailed:
		next = PaymentDeclined
		if ev.Reason == "voided" {
			next = PaymentVoided
		}
	case KindRefunded:
		next = PaymentRefunded
		if ev.Amount.Amount == 0 {
			// Nothing had been captured: a declined payment stays declined;
			// a refund before any charge voids the order's payment.
			next = PaymentVoided
		}
	}
	if paymentRank(next) > paymentRank(current) {
		return next
	}
	return current
}

// CustomerNamed is customer.registered or customer.updated.
type CustomerNamed struct {
	CustomerID, Name string
	At               time.Time
}

// Customer is a customer's name as the read model keeps it.
type Customer struct {
	ID, Name string
	NamedAt  time.Time
}

// Rename applies ev and reports whether the name changed hands: an event
// older than the name kept is a late copy and is ignored; of two with the
// same time, the one read last wins.
func (c *Customer) Rename(ev CustomerNamed) bool {
	if ev.At.Before(c.NamedAt) || (ev.Name == c.Name && ev.At.Equal(c.NamedAt)) {
		return false
	}
	c.Name, c.NamedAt = ev.Name, ev.At
	return true
}

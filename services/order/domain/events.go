package domain

import (
	"errors"
	"fmt"
	"time"
)

// Event is something that happened to an order. An order's state is its
// events applied in order; nothing else is stored as the truth.
type Event interface {
	// Type is the event's name, as published: order.created, ...
	Type() string
	// When is when it happened.
	When() time.Time
}

// Event names, shared by the event store and the published contract.
const (
	TypeCreated   = "order.created"
	TypeConfirmed = "order.confirmed"
	TypeCancelled = "order.cancelled"
	TypeShipped   = "order.shipped"
)

// OrderCreated opens an order.
type OrderCreated struct {
	CustomerID string
	Lines      []Line
	Total      Money
	Saga       string
	At         time.Time
}

// OrderConfirmed: payment captured and stock reserved.
type OrderConfirmed struct{ At time.Time }

// OrderCancelled: the order will not be fulfilled, and why.
type OrderCancelled struct {
	Reason string
	At     time.Time
}

// OrderShipped: the order left the warehouse.
type OrderShipped struct {
	ShipmentID     string
	TrackingNumber string
	At             time.Time
}

func (OrderCreated) Type() string   { return TypeCreated }
func (OrderConfirmed) Type() string { return TypeConfirmed }
func (OrderCancelled) Type() string { return TypeCancelled }
func (OrderShipped) Type() string   { return TypeShipped }

func (e OrderCreated) When() time.Time   { return e.At }
func (e OrderConfirmed) When() time.Time { return e.At }
func (e OrderCancelled) When() time.Time { return e.At }
func (e OrderShipped) When() time.Time   { return e.At }

// ErrCorruptStream: stored events that no order could have produced.
var ErrCorruptStream = errors.New("order event stream is inconsistent")

// Replay rebuilds order id from its events, oldest first, on top of from (a
// snapshot's state; nil to start from nothing). The first event of a new
// stream must be OrderCreated.
func Replay(id string, from *Order, events []Event) (*Order, error) {
	o := from
	if o == nil {
		if len(events) == 0 {
			return nil, ErrNotFound
		}
		if _, ok := events[0].(OrderCreated); !ok {
			return nil, fmt.Errorf("%w: order %s starts with %s", ErrCorruptStream, id, events[0].Type())
		}
		o = &Order{id: id}
	}
	for _, e := range events {
		if _, ok := e.(OrderCreated); ok && o.version > 0 {
			return nil, fmt.Errorf("%w: order %s created twice", ErrCorruptStream, id)
		}
		o.apply(e)
	}
	o.changes = nil
	return o, nil
}

// apply changes the state as e says; it checks nothing, since a stored
// event has happened already.
func (o *Order) apply(e Event) {
	switch e := e.(type) {
	case OrderCreated:
		o.customerID, o.status, o.lines, o.total, o.saga = e.CustomerID, Pending, e.Lines, e.Total, e.Saga
		o.createdAt = e.At
	case OrderConfirmed:
		o.status = Confirmed
	case OrderCancelled:
		o.status, o.reason = Cancelled, e.Reason
	case OrderShipped:
		o.status = Shipped
		o.shipment = Shipment{ID: e.ShipmentID, TrackingNumber: e.TrackingNumber, ShippedAt: e.At}
	}
	o.version++
	o.updatedAt = e.When()
}

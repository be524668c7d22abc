// Package orderviewtest builds, for tests, the events orderview reads, as
// their owners publish them, and declares their streams.
package orderviewtest

import (
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	customerv1 "github.com/mercato-shop/mercato/api/gen/customer/v1"
	moneyv1 "github.com/mercato-shop/mercato/api/gen/money/v1"
	orderv1 "github.com/mercato-shop/mercato/api/gen/order/v1"
	paymentv1 "github.com/mercato-shop/mercato/api/gen/payment/v1"
	"github.com/mercato-shop/mercato/platform/bus"
)

// Streams are the streams orderview reads, declared as their owners do.
func Streams() []bus.Stream {
	return []bus.Stream{
		{Name: "ORDER", Subjects: []string{"order.>"}},
		{Name: "PAYMENT", Subjects: []string{"payment.completed", "payment.failed", "payment.refunded"}},
		{Name: "CUSTOMER", Subjects: []string{"customer.>"}},
	}
}

// StreamOf names the stream that keeps events of type typ.
func StreamOf(typ string) string {
	prefix, _, _ := strings.Cut(typ, ".")
	return strings.ToUpper(prefix)
}

// EUR is an amount in euro cents.
func EUR(amount int64) *moneyv1.Money { return &moneyv1.Money{Amount: amount, Currency: "EUR"} }

// Created is order.created: two mugs at 12.50 EUR, orchestrated.
func Created(orderID, customerID string, version int64, at time.Time) bus.Event {
	return bus.Event{Type: "order.created", Subject: orderID, Data: &orderv1.OrderCreated{
		OrderId: orderID, CustomerId: customerID, Saga: "orchestrated", CreatedAt: timestamppb.New(at), Version: version,
		Items: []*orderv1.OrderLine{{ProductId: "0190a0e0-0000-7000-8000-00000000b00c", Name: "Mug", Quantity: 2, UnitPrice: EUR(1250)}},
		Total: EUR(2500), PaymentToken: "tok_ok",
	}}
}

// Confirmed is order.confirmed.
func Confirmed(orderID, customerID string, version int64, at time.Time) bus.Event {
	return bus.Event{Type: "order.confirmed", Subject: orderID, Data: &orderv1.OrderConfirmed{
		OrderId: orderID, CustomerId: customerID, ConfirmedAt: timestamppb.New(at), Version: version,
	}}
}

// Cancelled is order.cancelled.
func Cancelled(orderID, customerID, reason string, version int64, at time.Time) bus.Event {
	return bus.Event{Type: "order.cancelled", Subject: orderID, Data: &orderv1.OrderCancelled{
		OrderId: orderID, CustomerId: customerID, Reason: reason, CancelledAt: timestamppb.New(at), Version: version,
	}}
}

// Shipped is order.shipped, with shipment "ship-<first 8 of the order id>"
// and tracking number "TRK-<first 8>".
func Shipped(orderID, customerID string, version int64, at time.Time) bus.Event {
	return bus.Event{Type: "order.shipped", Subject: orderID, Data: &orderv1.OrderShipped{
		OrderId: orderID, CustomerId: customerID, ShipmentId: "ship-" + orderID[:8], TrackingNumber: "TRK-" + orderID[:8],
		ShippedAt: timestamppb.New(at), Version: version,
	}}
}

// Registered is customer.registered.
func Registered(customerID, name string, at time.Time) bus.Event {
	return bus.Event{Type: "customer.registered", Subject: customerID, Data: &customerv1.CustomerRegistered{
		CustomerId: customerID, Email: customerID + "@example.com", Name: name, RegisteredAt: timestamppb.New(at),
	}}
}

// Updated is customer.updated.
func Updated(customerID, name string, at time.Time) bus.Event {
	return bus.Event{Type: "customer.updated", Subject: customerID, Data: &customerv1.CustomerUpdated{
		CustomerId: customerID, Email: customerID + "@example.com", Name: name, UpdatedAt: timestamppb.New(at),
	}}
}

// Paid is payment.completed.
func Paid(orderID string, amount int64) bus.Event {
	return bus.Event{Type: "payment.completed", Subject: orderID, Data: &paymentv1.PaymentCompleted{
		PaymentId: "pay-" + orderID, OrderId: orderID, Amount: EUR(amount), Saga: "orchestrated",
	}}
}

// Declined is payment.failed with reason payment_declined.
func Declined(orderID string, amount int64) bus.Event {
	return bus.Event{Type: "payment.failed", Subject: orderID, Data: &paymentv1.PaymentFailed{
		PaymentId: "pay-" + orderID, OrderId: orderID, Amount: EUR(amount), Reason: "payment_declined", Saga: "orchestrated",
	}}
}

// Refunded is payment.refunded of amount (0: nothing had been captured).
func Refunded(orderID string, amount int64) bus.Event {
	return bus.Event{Type: "payment.refunded", Subject: orderID, Data: &paymentv1.PaymentRefunded{
		PaymentId: "pay-" + orderID, OrderId: orderID, Amount: EUR(amount), Saga: "orchestrated",
	}}
}

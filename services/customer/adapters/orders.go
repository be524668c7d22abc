package adapters

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	orderv1 "github.com/mercato-shop/mercato/api/gen/order/v1"
	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/services/customer/domain"
)

// The order context's events, as named by its contract.
const (
	orderCreated   = "order.created"
	orderConfirmed = "order.confirmed"
	orderCancelled = "order.cancelled"
	orderShipped   = "order.shipped"
)

// HistoryConsumer is the durable consumer of the order events the order
// history is kept from. The ORDER stream is the order context's; the
// consumer waits for it when customer starts first.
func HistoryConsumer() bus.Consumer {
	return bus.Consumer{
		Stream:   "ORDER",
		Durable:  "customer-history",
		Subjects: []string{orderCreated, orderConfirmed, orderCancelled, orderShipped},
	}
}

type orderEventRecorder interface {
	RecordOrderEvent(ctx context.Context, e domain.OrderEvent) error
}

// OrderEvents keeps the customers' order history from the order context's
// events. Idempotent consumer: each order's version, stored with the
// change, makes a redelivered or overtaken event a no-op (see
// Store.RecordOrderEvent), so no inbox is needed.
type OrderEvents struct {
	History orderEventRecorder
}

// Handlers routes the order events.
func (h *OrderEvents) Handlers() bus.Handlers {
	return bus.Handlers{
		orderCreated: bus.On(func(ctx context.Context, m bus.Message, ev *orderv1.OrderCreated) error {
			var items int64
			for _, l := range ev.GetItems() {
				items += int64(l.GetQuantity())
			}
			total := domain.Money{Amount: ev.GetTotal().GetAmount(), Currency: ev.GetTotal().GetCurrency()}
			e, err := domain.OrderPlaced(ev.GetOrderId(), ev.GetCustomerId(), total, items, ev.GetVersion(), at(ev.GetCreatedAt(), m))
			return h.record(ctx, m, e, err)
		}),
		orderConfirmed: bus.On(func(ctx context.Context, m bus.Message, ev *orderv1.OrderConfirmed) error {
			e, err := domain.OrderChanged(ev.GetOrderId(), ev.GetCustomerId(), domain.OrderConfirmed, "", ev.GetVersion(), at(ev.GetConfirmedAt(), m))
			return h.record(ctx, m, e, err)
		}),
		orderCancelled: bus.On(func(ctx context.Context, m bus.Message, ev *orderv1.OrderCancelled) error {
			e, err := domain.OrderChanged(ev.GetOrderId(), ev.GetCustomerId(), domain.OrderCancelled, ev.GetReason(), ev.GetVersion(), at(ev.GetCancelledAt(), m))
			return h.record(ctx, m, e, err)
		}),
		orderShipped: bus.On(func(ctx context.Context, m bus.Message, ev *orderv1.OrderShipped) error {
			e, err := domain.OrderChanged(ev.GetOrderId(), ev.GetCustomerId(), domain.OrderShipped, "", ev.GetVersion(), at(ev.GetShippedAt(), m))
			return h.record(ctx, m, e, err)
		}),
	}
}

// record applies e, built from m with invalid set when it could not be: an
// event the history can never apply is poison (dead-lettered); a failed
// write is retried.
func (h *OrderEvents) record(ctx context.Context, m bus.Message, e domain.OrderEvent, invalid error) error {
	if invalid != nil {
		return fmt.Errorf("%s %s: %w: %w", m.Type, m.ID, bus.ErrPoison, invalid)
	}
	return h.History.RecordOrderEvent(ctx, e)
}

// at is the time an event states, or else its ce-time.
func at(ts *timestamppb.Timestamp, m bus.Message) time.Time {
	if ts.IsValid() {
		return ts.AsTime()
	}
	return m.Time
}

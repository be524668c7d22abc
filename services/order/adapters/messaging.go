package adapters

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/mercato-shop/mercato/api/gen/inventory/v1"
	moneyv1 "github.com/mercato-shop/mercato/api/gen/money/v1"
	orderv1 "github.com/mercato-shop/mercato/api/gen/order/v1"
	paymentv1 "github.com/mercato-shop/mercato/api/gen/payment/v1"
	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/services/order/app"
	"github.com/mercato-shop/mercato/services/order/domain"
)

// EventStream keeps the events the order context publishes.
func EventStream() bus.Stream {
	return bus.Stream{Name: "ORDER", Subjects: []string{"order.>"}}
}

// Participants' commands and replies, as named by their owners' contracts.
const (
	cmdReserve = "inventory.cmd.reserve"
	cmdRelease = "inventory.cmd.release"
	cmdCharge  = "payment.cmd.charge"
	cmdRefund  = "payment.cmd.refund"
)

// ReplyConsumers are the saga's durable consumers of its participants'
// answers: one per participant stream.
func ReplyConsumers() []bus.Consumer {
	return []bus.Consumer{
		{Stream: "INVENTORY", Durable: "order-saga", Subjects: []string{string(domain.StockReserved), string(domain.StockFailed), string(domain.StockReleased)}},
		{Stream: "PAYMENT", Durable: "order-saga", Subjects: []string{string(domain.PaymentCompleted), string(domain.PaymentFailed), string(domain.PaymentRefunded)}},
	}
}

// commandEvents turns saga commands into the messages that carry them. Each
// command gets a new message id: a command sent again on purpose (resume)
// must not be dropped as a duplicate. AnnounceOrder is order.created.
func commandEvents(cmds []domain.Command) ([]bus.Event, error) {
	out := make([]bus.Event, 0, len(cmds))
	for _, cmd := range cmds {
		var ev bus.Event
		switch c := cmd.(type) {
		case domain.AnnounceOrder:
			ev = createdEvent(c.Order, c.PaymentToken)
		case domain.ReserveStock:
			lines := make([]*inventoryv1.Line, len(c.Lines))
			for i, l := range c.Lines {
				lines[i] = &inventoryv1.Line{ProductId: l.ProductID, Quantity: int32(l.Quantity)}
			}
			ev = bus.Event{Type: cmdReserve, Subject: c.OrderID, Data: &inventoryv1.ReserveStock{OrderId: c.OrderID, Lines: lines}}
		case domain.ReleaseStock:
			ev = bus.Event{Type: cmdRelease, Subject: c.OrderID, Data: &inventoryv1.ReleaseStock{OrderId: c.OrderID, Reason: c.Reason}}
		case domain.ChargePayment:
			ev = bus.Event{Type: cmdCharge, Subject: c.OrderID, Data: &paymentv1.ChargePayment{
				OrderId: c.OrderID, CustomerId: c.CustomerID, Amount: money(c.Amount), PaymentToken: c.Token,
			}}
		case domain.RefundPayment:
			ev = bus.Event{Type: cmdRefund, Subject: c.OrderID, Data: &paymentv1.RefundPayment{OrderId: c.OrderID, Reason: c.Reason}}
		default:
			return nil, fmt.Errorf("unknown saga command %T", cmd)
		}
		out = append(out, ev)
	}
	return out, nil
}

// orderEventIDs derives an event id from the order and the event type, so
// that announcing the same change twice yields one message (broker dedupe).
const orderEventIDs = "2b8f7f9c-5d3e-4d0a-8a43-2f5a8e0c9b61"

func eventID(orderID, typ string) string {
	return uuid.NewSHA1(uuid.MustParse(orderEventIDs), []byte(typ+"/"+orderID)).String()
}

// createdEvent is order.created. paymentToken is given for a choreographed
// order only: payment charges from the event.
func createdEvent(o *domain.Order, paymentToken string) bus.Event {
	return bus.Event{
		ID: eventID(o.ID(), domain.TypeCreated), Type: domain.TypeCreated, Subject: o.ID(), Time: o.CreatedAt(),
		Data: &orderv1.OrderCreated{
			OrderId: o.ID(), CustomerId: o.CustomerID(), Items: lines(o.Lines()), Total: money(o.Total()),
			Saga: o.Saga(), CreatedAt: timestamppb.New(o.CreatedAt()), PaymentToken: paymentToken,
			Version: o.Version(),
		},
	}
}

// publishedEvent is what e, the order's event at version, is published as;
// order.created is published by Create, with the saga's first command.
func publishedEvent(o *domain.Order, e domain.Event, version int64) (bus.Event, bool) {
	at := timestamppb.New(e.When())
	var data proto.Message
	switch e := e.(type) {
	case domain.OrderConfirmed:
		data = &orderv1.OrderConfirmed{OrderId: o.ID(), CustomerId: o.CustomerID(), ConfirmedAt: at, Version: version}
	case domain.OrderCancelled:
		data = &orderv1.OrderCancelled{OrderId: o.ID(), CustomerId: o.CustomerID(), Reason: e.Reason, CancelledAt: at, Version: version}
	case domain.OrderShipped:
		data = &orderv1.OrderShipped{OrderId: o.ID(), CustomerId: o.CustomerID(), ShipmentId: e.ShipmentID,
			TrackingNumber: e.TrackingNumber, ShippedAt: at, Version: version}
	default:
		return bus.Event{}, false
	}
	return bus.Event{ID: eventID(o.ID(), e.Type()), Type: e.Type(), Subject: o.ID(), Time: e.When(), Data: data}, true
}

func money(m domain.Money) *moneyv1.Money {
	return &moneyv1.Money{Amount: m.Amount, Currency: m.Currency}
}

func lines(ls []domain.Line) []*orderv1.OrderLine {
	out := make([]*orderv1.OrderLine, len(ls))
	for i, l := range ls {
		out[i] = &orderv1.OrderLine{ProductId: l.ProductID, Name: l.Name, Quantity: int32(l.Quantity), UnitPrice: money(l.UnitPrice)}
	}
	return out
}

type replyHandler interface {
	Reply(ctx context.Context, orderID string, r domain.Reply, claim app.Claim) error
}

// replyConsumer names the saga's consumers in the inbox.
const replyConsumer = "order-saga"

// Replies turns participants' events into saga replies.
type Replies struct {
	Saga replyHandler
}

// Handlers routes the participants' events.
func (r *Replies) Handlers() bus.Handlers {
	reply := func(ctx context.Context, m bus.Message, orderID string, kind domain.ReplyKind, reason string) error {
		if orderID == "" {
			return fmt.Errorf("%s without an order id: %w", kind, bus.ErrPoison)
		}
		// Idempotent consumer: the message id is recorded with the change.
		return r.Saga.Reply(ctx, orderID, domain.Reply{Kind: kind, Reason: reason}, app.Claim{Consumer: replyConsumer, MessageID: m.ID})
	}
	return bus.Handlers{
		string(domain.StockReserved): bus.On(func(ctx context.Context, m bus.Message, ev *inventoryv1.StockReserved) error {
			return reply(ctx, m, ev.GetOrderId(), domain.StockReserved, "")
		}),
		string(domain.StockFailed): bus.On(func(ctx context.Context, m bus.Message, ev *inventoryv1.StockReservationFailed) error {
			return reply(ctx, m, ev.GetOrderId(), domain.StockFailed, ev.GetReason())
		}),
		string(domain.StockReleased): bus.On(func(ctx context.Context, m bus.Message, ev *inventoryv1.StockReleased) error {
			return reply(ctx, m, ev.GetOrderId(), domain.StockReleased, "")
		}),
		string(domain.PaymentCompleted): bus.On(func(ctx context.Context, m bus.Message, ev *paymentv1.PaymentCompleted) error {
			return reply(ctx, m, ev.GetOrderId(), domain.PaymentCompleted, "")
		}),
		string(domain.PaymentFailed): bus.On(func(ctx context.Context, m bus.Message, ev *paymentv1.PaymentFailed) error {
			return reply(ctx, m, ev.GetOrderId(), domain.PaymentFailed, ev.GetReason())
		}),
		string(domain.PaymentRefunded): bus.On(func(ctx context.Context, m bus.Message, ev *paymentv1.PaymentRefunded) error {
			return reply(ctx, m, ev.GetOrderId(), domain.PaymentRefunded, "")
		}),
	}
}

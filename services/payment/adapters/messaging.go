package adapters

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	moneyv1 "github.com/mercato-shop/mercato/api/gen/money/v1"
	paymentv1 "github.com/mercato-shop/mercato/api/gen/payment/v1"
	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/services/payment/app"
	"github.com/mercato-shop/mercato/services/payment/domain"
)

// Event and command names of the payment context.
const (
	CmdCharge      = "payment.cmd.charge"
	CmdRefund      = "payment.cmd.refund"
	EventCompleted = "payment.completed"
	EventFailed    = "payment.failed"
	EventRefunded  = "payment.refunded"
)

// EventStream keeps the events payment publishes. Its subjects are listed
// one by one: a wildcard would overlap the command queue's payment.cmd.>.
func EventStream() bus.Stream {
	return bus.Stream{Name: "PAYMENT", Subjects: []string{EventCompleted, EventFailed, EventRefunded}}
}

// CommandStream is the payment-processing work queue: each command is
// consumed once, by one instance.
func CommandStream() bus.Stream {
	return bus.Stream{Name: "PAYMENT_PROCESSING", Subjects: []string{"payment.cmd.>"}, WorkQueue: true}
}

// CommandConsumer is the durable consumer of the queue, shared by every
// payment instance. A command the provider keeps failing is retried with
// backoff for about four minutes before it goes to the dead letters.
func CommandConsumer() bus.Consumer {
	return bus.Consumer{Stream: "PAYMENT_PROCESSING", Durable: "payment-processing", MaxDeliver: 20}
}

// Events maps payment outcomes to the events that announce them. It does no
// I/O: the store writes them to the outbox, with the change they announce.
type Events struct{}

// eventIDSpace derives an event's id from the order and the event type, so
// a command redelivered after a crash, or handled twice at once, produces
// the same id: the outbox keeps one while it is pending, and the broker
// drops a duplicate (Nats-Msg-Id dedupe).
const eventIDSpace = "3b8f4c1e-9d27-4e6a-b1f0-7c2d5a9e8b41"

// Charged announces a settled payment: payment.completed when it captured
// money (refunded since or not), payment.failed otherwise.
func (Events) Charged(p *domain.Payment) (bus.Event, error) {
	switch {
	case p.Paid():
		return event(EventCompleted, p.OrderID(), &paymentv1.PaymentCompleted{
			PaymentId: p.ID(), OrderId: p.OrderID(), Amount: toMoney(p.Amount()), Saga: p.Saga(),
		}), nil
	case p.Settled():
		return event(EventFailed, p.OrderID(), &paymentv1.PaymentFailed{
			PaymentId: p.ID(), OrderId: p.OrderID(), Amount: toMoney(p.Amount()), Reason: p.Reason(), Saga: p.Saga(),
		}), nil
	default:
		return bus.Event{}, fmt.Errorf("announce outcome of payment %s: it is %s", p.ID(), p.Status())
	}
}

// Invalid answers a malformed charge with payment.failed, reason "invalid".
func (Events) Invalid(orderID string, amount domain.Money) bus.Event {
	return event(EventFailed, orderID, &paymentv1.PaymentFailed{
		OrderId: orderID, Amount: toMoney(amount), Reason: domain.ReasonInvalid,
	})
}

// Refunded announces payment.refunded with the amount given back, zero
// when nothing had been captured.
func (Events) Refunded(p *domain.Payment) bus.Event {
	return event(EventRefunded, p.OrderID(), &paymentv1.PaymentRefunded{
		PaymentId: p.ID(), OrderId: p.OrderID(), Amount: toMoney(p.RefundedAmount()), Saga: p.Saga(),
	})
}

func event(typ, orderID string, data proto.Message) bus.Event {
	return bus.Event{
		ID:      uuid.NewSHA1(uuid.MustParse(eventIDSpace), []byte(typ+"/"+orderID)).String(),
		Type:    typ,
		Subject: orderID,
		Data:    data,
	}
}

func toMoney(m domain.Money) *moneyv1.Money {
	return &moneyv1.Money{Amount: m.Amount, Currency: m.Currency}
}

type chargeHandler interface {
	Handle(ctx context.Context, cmd app.Charge) (*domain.Payment, error)
}

type refundHandler interface {
	Handle(ctx context.Context, orderID string) (*domain.Payment, error)
}

// Commands handles the payment-processing queue. A command is acknowledged
// only after its effect and its answer are committed (the outbox relay
// publishes the answer); a failure (the provider unavailable, a charge still
// in progress) leaves it for redelivery with backoff, which the idempotent
// handlers make safe.
type Commands struct {
	Charge chargeHandler
	Refund refundHandler
}

// Handlers routes commands by type.
func (c *Commands) Handlers() bus.Handlers {
	return bus.Handlers{
		CmdCharge: bus.On(func(ctx context.Context, _ bus.Message, cmd *paymentv1.ChargePayment) error {
			_, err := c.Charge.Handle(ctx, app.Charge{
				OrderID:    cmd.GetOrderId(),
				CustomerID: cmd.GetCustomerId(),
				Amount:     domain.Money{Amount: cmd.GetAmount().GetAmount(), Currency: cmd.GetAmount().GetCurrency()},
				Token:      cmd.GetPaymentToken(),
			})
			return poison(err)
		}),
		CmdRefund: bus.On(func(ctx context.Context, _ bus.Message, cmd *paymentv1.RefundPayment) error {
			_, err := c.Refund.Handle(ctx, cmd.GetOrderId())
			return poison(err)
		}),
	}
}

// poison marks a command that can never succeed, so it is not redelivered.
func poison(err error) error {
	if errors.Is(err, domain.ErrInvalidCommand) {
		return fmt.Errorf("%w: %w", bus.ErrPoison, err)
	}
	return err
}

package adapters

import (
	"context"
	"errors"

	inventoryv1 "github.com/mercato-shop/mercato/api/gen/inventory/v1"
	orderv1 "github.com/mercato-shop/mercato/api/gen/order/v1"
	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/services/payment/app"
	"github.com/mercato-shop/mercato/services/payment/domain"
)

// ChoreographyConsumers are payment's part in the choreographed order saga:
// it charges on order.created and refunds on inventory.failed.
func ChoreographyConsumers() []bus.Consumer {
	return []bus.Consumer{
		{Stream: "ORDER", Durable: "payment-choreography", Subjects: []string{"order.created"}},
		{Stream: "INVENTORY", Durable: "payment-choreography", Subjects: []string{"inventory.failed"}},
	}
}

type paymentByOrder interface {
	ByOrder(ctx context.Context, orderID string) (*domain.Payment, error)
}

// Choreography reacts to other contexts' events for choreographed orders;
// orchestrated orders are left to the saga's commands.
type Choreography struct {
	Charge   chargeHandler
	Refund   refundHandler
	Payments paymentByOrder
}

// Handlers routes the events payment reacts to.
func (c *Choreography) Handlers() bus.Handlers {
	return bus.Handlers{
		"order.created": bus.On(func(ctx context.Context, _ bus.Message, ev *orderv1.OrderCreated) error {
			if ev.GetSaga() != domain.Choreographed {
				return nil
			}
			_, err := c.Charge.Handle(ctx, app.Charge{
				OrderID:    ev.GetOrderId(),
				CustomerID: ev.GetCustomerId(),
				Amount:     domain.Money{Amount: ev.GetTotal().GetAmount(), Currency: ev.GetTotal().GetCurrency()},
				Token:      ev.GetPaymentToken(),
				Saga:       domain.Choreographed,
			})
			return poison(err)
		}),
		"inventory.failed": bus.On(func(ctx context.Context, _ bus.Message, ev *inventoryv1.StockReservationFailed) error {
			p, err := c.Payments.ByOrder(ctx, ev.GetOrderId())
			if errors.Is(err, domain.ErrNotFound) {
				return nil // not an order payment charged on its own
			}
			if err != nil {
				return err
			}
			if p.Saga() != domain.Choreographed {
				return nil
			}
			_, err = c.Refund.Handle(ctx, ev.GetOrderId())
			return poison(err)
		}),
	}
}

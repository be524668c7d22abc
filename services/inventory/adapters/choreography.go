package adapters

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	orderv1 "github.com/mercato-shop/mercato/api/gen/order/v1"
	paymentv1 "github.com/mercato-shop/mercato/api/gen/payment/v1"
	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/services/inventory/domain"
)

const choreographed = "choreographed"

// ChoreographyConsumers are inventory's part in the choreographed order
// saga: it learns an order's lines from order.created and reserves them
// when payment.completed says the order is paid.
func ChoreographyConsumers() []bus.Consumer {
	return []bus.Consumer{
		{Stream: "ORDER", Durable: "inventory-choreography", Subjects: []string{"order.created"}},
		{Stream: "PAYMENT", Durable: "inventory-choreography", Subjects: []string{"payment.completed"}},
	}
}

type jsonLine struct {
	ProductID string `json:"product_id"`
	Quantity  int64  `json:"quantity"`
}

// RememberOrder keeps a choreographed order's lines until it is paid.
func (s *Store) RememberOrder(ctx context.Context, orderID string, lines []domain.Line) error {
	js := make([]jsonLine, len(lines))
	for i, l := range lines {
		js[i] = jsonLine{l.ProductID, l.Quantity}
	}
	b, err := json.Marshal(js)
	if err != nil {
		return err
	}
	_, err = s.db.ExecContext(ctx,
		`INSERT INTO choreographed_orders (order_id, lines, created_at) VALUES ($1, $2, $3) ON CONFLICT (order_id) DO NOTHING`,
		orderID, string(b), time.Now().UnixMicro())
	if err != nil {
		return fmt.Errorf("remember order %s: %w", orderID, err)
	}
	return nil
}

// errUnknownOrder: payment.completed came before its order.created.
var errUnknownOrder = errors.New("order lines not seen yet")

// OrderLines returns the lines RememberOrder kept.
func (s *Store) OrderLines(ctx context.Context, orderID string) ([]domain.Line, error) {
	var raw string
	err := s.db.QueryRowContext(ctx, `SELECT lines FROM choreographed_orders WHERE order_id = $1`, orderID).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errUnknownOrder
	}
	if err != nil {
		return nil, fmt.Errorf("order lines of %s: %w", orderID, err)
	}
	var js []jsonLine
	if err := json.Unmarshal([]byte(raw), &js); err != nil {
		return nil, fmt.Errorf("order lines of %s: %w", orderID, err)
	}
	lines := make([]domain.Line, len(js))
	for i, l := range js {
		lines[i] = domain.Line{ProductID: l.ProductID, Quantity: l.Quantity}
	}
	return lines, nil
}

type orderLines interface {
	RememberOrder(ctx context.Context, orderID string, lines []domain.Line) error
	OrderLines(ctx context.Context, orderID string) ([]domain.Line, error)
}

// Choreography reacts to other contexts' events for choreographed orders;
// orchestrated orders are left to the saga's commands.
type Choreography struct {
	Store   orderLines
	Reserve reserveHandler
}

// Handlers routes the events inventory reacts to.
func (c *Choreography) Handlers() bus.Handlers {
	return bus.Handlers{
		"order.created": bus.On(func(ctx context.Context, _ bus.Message, ev *orderv1.OrderCreated) error {
			if ev.GetSaga() != choreographed {
				return nil
			}
			lines := make([]domain.Line, len(ev.GetItems()))
			for i, it := range ev.GetItems() {
				lines[i] = domain.Line{ProductID: it.GetProductId(), Quantity: int64(it.GetQuantity())}
			}
			return c.Store.RememberOrder(ctx, ev.GetOrderId(), lines)
		}),
		"payment.completed": bus.On(func(ctx context.Context, _ bus.Message, ev *paymentv1.PaymentCompleted) error {
			if ev.GetSaga() != choreographed {
				return nil
			}
			// Streams are not ordered with each other: when the payment
			// overtakes the order, this fails and is retried after backoff.
			lines, err := c.Store.OrderLines(ctx, ev.GetOrderId())
			if err != nil {
				return err
			}
			_, err = c.Reserve.Handle(ctx, ev.GetOrderId(), lines)
			return poison(err)
		}),
	}
}

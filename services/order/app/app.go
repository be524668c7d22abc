// Package app holds the order context's use cases: placing an order (which
// starts its saga), applying participants' replies to the saga, resuming
// sagas that stalled, and reading orders.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/mercato-shop/mercato/services/order/domain"
)

// Product is what the catalog says about a product when an order is placed.
type Product struct {
	ID        string
	Name      string
	Price     domain.Money
	Available int64
}

// OutOfStockError: the catalog plainly cannot serve the order.
type OutOfStockError struct {
	ProductIDs []string
}

func (e *OutOfStockError) Error() string {
	return fmt.Sprintf("out of stock: %v", e.ProductIDs)
}

type catalog interface {
	Products(ctx context.Context, ids []string) (map[string]Product, error)
}

// Outgoing messages after a commit: saga commands and order events.
type sender interface {
	Send(ctx context.Context, cmd domain.Command) error
	OrderCreated(ctx context.Context, o *domain.Order) error
	OrderChanged(ctx context.Context, o *domain.Order) error
}

type orderCreator interface {
	Create(ctx context.Context, o *domain.Order, saga *domain.Saga, key *IdempotencyKey) (existing string, err error)
	Order(ctx context.Context, id string) (*domain.Order, error)
}

// IdempotencyKey ties a client's Idempotency-Key to a hash of its request.
type IdempotencyKey struct {
	Key         string
	RequestHash string
}

// PlaceOrder is the command to open an order.
type PlaceOrder struct {
	CustomerID   string
	Items        []domain.Item
	Saga         string
	PaymentToken string
	Idempotency  *IdempotencyKey
}

// PlaceOrderHandler prices an order from the catalog, stores it with its
// saga, and starts the saga.
type PlaceOrderHandler struct {
	catalog catalog
	store   orderCreator
	send    sender
	logger  *slog.Logger
	now     func() time.Time
}

func NewPlaceOrderHandler(c catalog, s orderCreator, send sender, logger *slog.Logger) PlaceOrderHandler {
	return PlaceOrderHandler{catalog: c, store: s, send: send, logger: logger, now: time.Now}
}

// Handle returns the order, and whether this call created it (false when an
// Idempotency-Key replays an earlier request). Prices come from the catalog,
// never from the client.
func (h PlaceOrderHandler) Handle(ctx context.Context, cmd PlaceOrder) (*domain.Order, bool, error) {
	items, err := domain.ValidateItems(cmd.Items)
	if err != nil {
		return nil, false, err
	}
	if cmd.Saga == "" {
		cmd.Saga = domain.Orchestrated
	}
	if cmd.PaymentToken == "" {
		return nil, false, &domain.ValidationError{Fields: []domain.FieldError{{Field: "payment.token", Message: "is required"}}}
	}
	ids := make([]string, len(items))
	for i, it := range items {
		ids[i] = it.ProductID
	}
	products, err := h.catalog.Products(ctx, ids)
	if err != nil {
		return nil, false, fmt.Errorf("price order: %w", err)
	}
	var unknown []domain.FieldError
	var short []string
	lines := make([]domain.Line, 0, len(items))
	for i, it := range items {
		p, ok := products[it.ProductID]
		if !ok {
			unknown = append(unknown, domain.FieldError{Field: fmt.Sprintf("items[%d].product_id", i), Message: "no such product"})
			continue
		}
		if p.Available < it.Quantity {
			short = append(short, it.ProductID)
		}
		lines = append(lines, domain.Line{ProductID: p.ID, Name: p.Name, Quantity: it.Quantity, UnitPrice: p.Price})
	}
	if len(unknown) > 0 {
		return nil, false, &domain.ValidationError{Fields: unknown}
	}
	if len(short) > 0 {
		return nil, false, &OutOfStockError{ProductIDs: short}
	}
	now := h.now()
	o, err := domain.NewOrder(cmd.CustomerID, lines, cmd.Saga, now)
	if err != nil {
		return nil, false, err
	}
	saga := domain.NewSaga(o, cmd.PaymentToken, now)
	existing, err := h.store.Create(ctx, o, saga, cmd.Idempotency)
	if err != nil {
		return nil, false, err
	}
	if existing != "" {
		o, err := h.store.Order(ctx, existing)
		return o, false, err
	}
	// Committed: the saga resumes from the store if these sends are lost.
	if err := h.send.OrderCreated(ctx, o); err != nil {
		h.logger.WarnContext(ctx, "publish order.created", "order_id", o.ID(), "err", err)
	}
	if err := h.send.Send(ctx, saga.Pending(o)); err != nil {
		h.logger.WarnContext(ctx, "send first saga command; it will be retried", "order_id", o.ID(), "err", err)
	}
	return o, true, nil
}

type orderUpdater interface {
	Update(ctx context.Context, id string, fn func(o *domain.Order, saga *domain.Saga) error) error
}

// SagaHandler drives orchestrated sagas: it applies participants' replies,
// and sends again the commands of sagas that have not moved for a while.
type SagaHandler struct {
	store  orderUpdater
	send   sender
	logger *slog.Logger
	now    func() time.Time
}

func NewSagaHandler(s orderUpdater, send sender, logger *slog.Logger) SagaHandler {
	return SagaHandler{store: s, send: send, logger: logger, now: time.Now}
}

// Reply applies a participant's reply to the order's saga, then sends the
// next command and announces a changed order. A reply for an unknown order,
// or one the saga no longer waits for, changes nothing.
func (h SagaHandler) Reply(ctx context.Context, orderID string, r domain.Reply) error {
	var (
		next    domain.Command
		changed *domain.Order
	)
	err := h.store.Update(ctx, orderID, func(o *domain.Order, saga *domain.Saga) error {
		next, changed = nil, nil
		before := o.Status()
		cmd, ok, err := saga.Handle(o, r, h.now())
		if err != nil || !ok {
			return err
		}
		next = cmd
		if o.Status() != before {
			changed = o
		}
		return nil
	})
	if errors.Is(err, domain.ErrNotFound) {
		h.logger.DebugContext(ctx, "reply for an unknown order", "order_id", orderID, "reply", r.Kind)
		return nil
	}
	if err != nil {
		return fmt.Errorf("apply %s to order %s: %w", r.Kind, orderID, err)
	}
	if next != nil {
		if err := h.send.Send(ctx, next); err != nil {
			// The saga's step is stored; Resume sends the command again.
			h.logger.WarnContext(ctx, "send saga command; it will be retried", "order_id", orderID, "err", err)
		}
	}
	if changed != nil {
		if err := h.send.OrderChanged(ctx, changed); err != nil {
			return fmt.Errorf("announce order %s: %w", orderID, err)
		}
	}
	return nil
}

type staleSagas interface {
	orderUpdater
	StaleSagas(ctx context.Context, before time.Time, limit int) ([]string, error)
}

// Resume sends again the pending command of every saga that has not moved
// since before: after a restart (before = now) every saga in flight resumes,
// and a command or reply lost on the way is made up for.
func (h SagaHandler) Resume(ctx context.Context, store staleSagas, before time.Time) (int, error) {
	resumed := 0
	for {
		ids, err := store.StaleSagas(ctx, before, 100)
		if err != nil {
			return resumed, err
		}
		if len(ids) == 0 {
			return resumed, nil
		}
		for _, id := range ids {
			var cmd domain.Command
			err := h.store.Update(ctx, id, func(o *domain.Order, saga *domain.Saga) error {
				cmd = nil
				if saga.Step() == domain.Done { // finished since it was listed
					return nil
				}
				saga.Retried(h.now())
				cmd = saga.Pending(o)
				return nil
			})
			if err != nil {
				return resumed, fmt.Errorf("resume saga of %s: %w", id, err)
			}
			if cmd == nil {
				continue
			}
			if err := h.send.Send(ctx, cmd); err != nil {
				return resumed, fmt.Errorf("resume saga of %s: %w", id, err)
			}
			resumed++
		}
		if len(ids) < 100 {
			return resumed, nil
		}
	}
}

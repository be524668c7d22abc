// Package app holds the order context's use cases: placing an order (which
// starts its saga), applying participants' replies to the saga, resuming
// sagas that stalled, and reading orders.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"

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

// PlaceOrderHandler prices an order from the catalog and stores it with its
// saga; the store commits the saga's first command with them (outbox).
type PlaceOrderHandler struct {
	catalog     catalog
	store       orderCreator
	logger      *slog.Logger
	stepTimeout time.Duration
	defaultSaga string
	now         func() time.Time
}

// NewPlaceOrderHandler returns the handler. An order that names no saga
// mode runs in defaultSaga; a saga step waits at most stepTimeout for its
// reply before the saga compensates.
func NewPlaceOrderHandler(c catalog, s orderCreator, defaultSaga string, stepTimeout time.Duration, logger *slog.Logger) PlaceOrderHandler {
	if defaultSaga == "" {
		defaultSaga = domain.Orchestrated
	}
	return PlaceOrderHandler{catalog: c, store: s, logger: logger, stepTimeout: stepTimeout, defaultSaga: defaultSaga, now: time.Now}
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
		cmd.Saga = h.defaultSaga
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
	saga := domain.NewSaga(o, cmd.PaymentToken, now, h.stepTimeout)
	existing, err := h.store.Create(ctx, o, saga, cmd.Idempotency)
	if err != nil {
		return nil, false, err
	}
	if existing != "" {
		o, err := h.store.Order(ctx, existing)
		return o, false, err
	}
	return o, true, nil
}

// Claim names a message being handled, for the inbox of an idempotent
// consumer: recorded with the change it causes, skipped when seen before.
type Claim struct {
	Consumer, MessageID string
}

type orderUpdater interface {
	Update(ctx context.Context, id string, claim *Claim, fn func(o *domain.Order, saga *domain.Saga) ([]domain.Command, error)) error
}

// SagaHandler drives orchestrated sagas: it applies participants' replies,
// the customer's cancellation and step deadlines, and sends again the
// commands of sagas that have not moved for a while. What a change sends is
// committed with it (the store's outbox).
type SagaHandler struct {
	store       orderUpdater
	logger      *slog.Logger
	stepTimeout time.Duration
	now         func() time.Time
}

func NewSagaHandler(s orderUpdater, stepTimeout time.Duration, logger *slog.Logger) SagaHandler {
	return SagaHandler{store: s, logger: logger, stepTimeout: stepTimeout, now: time.Now}
}

// apply changes an order's saga in one transaction with the commands it
// sends. moved tells whether fn changed anything.
func (h SagaHandler) apply(ctx context.Context, id string, claim *Claim, fn func(o *domain.Order, saga *domain.Saga) ([]domain.Command, bool, error)) (order *domain.Order, moved bool, err error) {
	err = h.store.Update(ctx, id, claim, func(o *domain.Order, saga *domain.Saga) ([]domain.Command, error) {
		cmds, ok, err := fn(o, saga)
		order, moved = o, ok
		if err != nil || !ok {
			return nil, err
		}
		return cmds, nil
	})
	if err != nil {
		return nil, false, err
	}
	return order, moved, nil
}

// Reply applies a participant's reply. A reply for an unknown order, one the
// saga no longer waits for, or one handled before (claim) changes nothing.
func (h SagaHandler) Reply(ctx context.Context, orderID string, r domain.Reply, claim Claim) error {
	_, _, err := h.apply(ctx, orderID, &claim, func(o *domain.Order, saga *domain.Saga) ([]domain.Command, bool, error) {
		return saga.Handle(o, r, h.now(), h.stepTimeout)
	})
	if errors.Is(err, domain.ErrNotFound) {
		h.logger.DebugContext(ctx, "reply for an unknown order", "order_id", orderID, "reply", r.Kind)
		return nil
	}
	if err != nil {
		return fmt.Errorf("apply %s to order %s: %w", r.Kind, orderID, err)
	}
	return nil
}

// CancelOrder is the customer's request to cancel an order.
type CancelOrder struct {
	OrderID    string
	CustomerID string
	Admin      bool // an admin may cancel any order
}

// Cancel starts compensating the order: refund and release, then
// CANCELLED with reason customer_cancelled. Cancelling a cancelled order, or
// one already being cancelled, changes nothing; a shipped order cannot be
// cancelled (domain.ErrInvalidTransition); another customer's order is
// domain.ErrNotFound.
func (h SagaHandler) Cancel(ctx context.Context, cmd CancelOrder) (*domain.Order, error) {
	o, _, err := h.apply(ctx, cmd.OrderID, nil, func(o *domain.Order, saga *domain.Saga) ([]domain.Command, bool, error) {
		if o.CustomerID() != cmd.CustomerID && !cmd.Admin {
			return nil, false, domain.ErrNotFound
		}
		return saga.Cancel(o, h.now())
	})
	return o, err
}

type sagaLister interface {
	StaleSagas(ctx context.Context, before time.Time, limit int) ([]string, error)
	ExpiredSagas(ctx context.Context, now time.Time, limit int) ([]string, error)
}

// Expire compensates every saga whose forward step outlived its deadline.
func (h SagaHandler) Expire(ctx context.Context, store sagaLister) (int, error) {
	return h.each(ctx, func(ctx context.Context) ([]string, error) { return store.ExpiredSagas(ctx, h.now(), 100) },
		func(o *domain.Order, saga *domain.Saga) ([]domain.Command, bool, error) {
			cmds, ok := saga.Expire(o, h.now())
			return cmds, ok, nil
		})
}

// Resume sends again the pending commands of every saga that has not moved
// since before: after a restart (before = now) every saga in flight resumes,
// and a command or reply lost on the way is made up for.
func (h SagaHandler) Resume(ctx context.Context, store sagaLister, before time.Time) (int, error) {
	return h.each(ctx, func(ctx context.Context) ([]string, error) { return store.StaleSagas(ctx, before, 100) },
		func(o *domain.Order, saga *domain.Saga) ([]domain.Command, bool, error) {
			if saga.Step() == domain.Done { // finished since it was listed
				return nil, false, nil
			}
			saga.Retried(h.now())
			return saga.Pending(o), true, nil
		})
}

// each applies fn to the sagas list returns, batch after batch, while fn
// moves them out of the list.
func (h SagaHandler) each(ctx context.Context, list func(context.Context) ([]string, error),
	fn func(o *domain.Order, saga *domain.Saga) ([]domain.Command, bool, error)) (int, error) {
	done := 0
	for {
		ids, err := list(ctx)
		if err != nil || len(ids) == 0 {
			return done, err
		}
		moved := 0
		for _, id := range ids {
			_, ok, err := h.apply(ctx, id, nil, fn)
			if err != nil {
				return done, fmt.Errorf("saga of %s: %w", id, err)
			}
			if ok {
				moved++
			}
		}
		done += moved
		if len(ids) < 100 || moved == 0 {
			return done, nil
		}
	}
}

type shipmentLister interface {
	DueShipments(ctx context.Context, now time.Time, limit int) ([]string, error)
}

// ShipDue ships every confirmed order whose shipment is due. An order whose
// cancellation is being compensated waits: it ships only if the saga ends
// with it still CONFIRMED, and a cancelled one never does.
func (h SagaHandler) ShipDue(ctx context.Context, store shipmentLister) (int, error) {
	return h.each(ctx, func(ctx context.Context) ([]string, error) { return store.DueShipments(ctx, h.now(), 100) },
		func(o *domain.Order, saga *domain.Saga) ([]domain.Command, bool, error) {
			if o.Status() != domain.Confirmed || saga.Step() != domain.Done {
				return nil, false, nil
			}
			id, err := uuid.NewV7()
			if err != nil {
				return nil, false, err
			}
			tracking := "MRC" + strings.ToUpper(strings.ReplaceAll(id.String(), "-", "")[20:])
			if err := o.Ship(id.String(), tracking, h.now()); err != nil {
				return nil, false, err
			}
			return nil, true, nil
		})
}

// Package app holds the inventory context's use cases: reserving and
// releasing stock for an order (commands of the order saga), and catalog
// queries.
package app

import (
	"context"
	"errors"

	"github.com/mercato-shop/mercato/services/inventory/domain"
)

type reserver interface {
	Reserve(ctx context.Context, orderID string, lines []domain.Line) (domain.Reservation, error)
}

type reservationPublisher interface {
	PublishReservation(ctx context.Context, r domain.Reservation) error
}

// ReserveHandler holds stock for an order and answers with
// inventory.reserved or inventory.failed.
type ReserveHandler struct {
	store  reserver
	events reservationPublisher
}

func NewReserveHandler(store reserver, events reservationPublisher) ReserveHandler {
	return ReserveHandler{store: store, events: events}
}

// Handle is idempotent per order id: a repeated command takes no more stock
// and announces the same outcome again.
func (h ReserveHandler) Handle(ctx context.Context, orderID string, lines []domain.Line) (domain.Reservation, error) {
	norm, err := domain.NormalizeLines(orderID, lines)
	if errors.Is(err, domain.ErrInvalidReservation) && orderID != "" {
		// A malformed command still gets an answer, so the saga does not wait.
		res := domain.Reservation{OrderID: orderID, Status: domain.Failed, Reason: domain.ReasonInvalid}
		return res, h.events.PublishReservation(ctx, res)
	}
	if err != nil {
		return domain.Reservation{}, err
	}
	res, err := h.store.Reserve(ctx, orderID, norm)
	if err != nil {
		return res, err
	}
	return res, h.events.PublishReservation(ctx, res)
}

type releaser interface {
	Release(ctx context.Context, orderID string) (domain.Reservation, bool, error)
}

// ReleaseHandler gives back an order's stock (the saga's compensation) and
// answers with inventory.released.
type ReleaseHandler struct {
	store  releaser
	events reservationPublisher
}

func NewReleaseHandler(store releaser, events reservationPublisher) ReleaseHandler {
	return ReleaseHandler{store: store, events: events}
}

// Handle is idempotent per order id: stock goes back at most once.
func (h ReleaseHandler) Handle(ctx context.Context, orderID string) (domain.Reservation, error) {
	if orderID == "" {
		return domain.Reservation{}, domain.ErrInvalidReservation
	}
	res, _, err := h.store.Release(ctx, orderID)
	if err != nil {
		return res, err
	}
	return res, h.events.PublishReservation(ctx, res)
}

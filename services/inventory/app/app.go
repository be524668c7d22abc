// Package app holds the inventory context's use cases: reserving and
// releasing stock for an order (commands of the order saga), and catalog
// queries.
package app

import (
	"context"
	"errors"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/services/inventory/domain"
)

// announcer maps a reservation's outcome to the event that answers it.
type announcer = func(domain.Reservation) bus.Event

// reserver records a reservation's outcome and writes its answer in the
// same transaction (transactional outbox); Announce writes an answer that
// records nothing.
type reserver interface {
	Reserve(ctx context.Context, orderID string, lines []domain.Line, announce announcer) (domain.Reservation, error)
	Announce(ctx context.Context, events ...bus.Event) error
}

// ReserveHandler holds stock for an order and answers with
// inventory.reserved or inventory.failed.
type ReserveHandler struct {
	store    reserver
	announce announcer
}

// NewReserveHandler returns a handler that answers each outcome with the
// event announce maps it to.
func NewReserveHandler(store reserver, announce announcer) ReserveHandler {
	return ReserveHandler{store: store, announce: announce}
}

// Handle is idempotent per order id: a repeated command takes no more stock
// and announces the same outcome again.
func (h ReserveHandler) Handle(ctx context.Context, orderID string, lines []domain.Line) (domain.Reservation, error) {
	norm, err := domain.NormalizeLines(orderID, lines)
	if errors.Is(err, domain.ErrInvalidReservation) && orderID != "" {
		// A malformed command still gets an answer, so the saga does not wait.
		res := domain.Reservation{OrderID: orderID, Status: domain.Failed, Reason: domain.ReasonInvalid}
		return res, h.store.Announce(ctx, h.announce(res))
	}
	if err != nil {
		return domain.Reservation{}, err
	}
	return h.store.Reserve(ctx, orderID, norm, h.announce)
}

// releaser gives back an order's stock and writes its answer in the same
// transaction.
type releaser interface {
	Release(ctx context.Context, orderID string, announce announcer) (domain.Reservation, bool, error)
}

// ReleaseHandler gives back an order's stock (the saga's compensation) and
// answers with inventory.released.
type ReleaseHandler struct {
	store    releaser
	announce announcer
}

// NewReleaseHandler returns a handler that answers each outcome with the
// event announce maps it to.
func NewReleaseHandler(store releaser, announce announcer) ReleaseHandler {
	return ReleaseHandler{store: store, announce: announce}
}

// Handle is idempotent per order id: stock goes back at most once.
func (h ReleaseHandler) Handle(ctx context.Context, orderID string) (domain.Reservation, error) {
	if orderID == "" {
		return domain.Reservation{}, domain.ErrInvalidReservation
	}
	res, _, err := h.store.Release(ctx, orderID, h.announce)
	return res, err
}

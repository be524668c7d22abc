// Package app holds orderview's queries.
package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mercato-shop/mercato/services/orderview/domain"
)

// Page sizes of a customer's list of orders.
const (
	DefaultLimit = 20
	MaxLimit     = 100
)

// ErrInvalidLimit: a page size outside 1..MaxLimit.
var ErrInvalidLimit = errors.New("invalid page size")

// Cursor is a place in a customer's orders, which are listed newest first:
// the list goes on with the orders created before CreatedAt, or at
// CreatedAt with a smaller ID (keyset pagination: a page costs the same
// wherever it is, and orders placed meanwhile do not shift the pages).
type Cursor struct {
	CreatedAt time.Time
	ID        string
}

// ListOrders asks for a page of a customer's orders.
type ListOrders struct {
	CustomerID string
	Limit      int
	// After is the cursor of the previous page; nil for the first.
	After *Cursor
}

// Page is a page of orders, newest first, and the cursor of the next page
// (nil on the last).
type Page struct {
	Orders []domain.Order
	Next   *Cursor
}

type customerOrders interface {
	// CustomerOrders returns up to limit orders of the customer, complete
	// ones only (order.created applied), newest first, after the cursor.
	CustomerOrders(ctx context.Context, customerID string, after *Cursor, limit int) ([]domain.Order, error)
}

// ListOrdersHandler answers ListOrders from the order read model.
type ListOrdersHandler struct {
	orders customerOrders
}

// NewListOrdersHandler returns the handler.
func NewListOrdersHandler(orders customerOrders) ListOrdersHandler {
	return ListOrdersHandler{orders: orders}
}

// Handle returns the page q asks for.
func (h ListOrdersHandler) Handle(ctx context.Context, q ListOrders) (Page, error) {
	if q.Limit < 1 || q.Limit > MaxLimit {
		return Page{}, fmt.Errorf("%w: %d is not in 1..%d", ErrInvalidLimit, q.Limit, MaxLimit)
	}
	// One more than asked tells whether there is a next page.
	orders, err := h.orders.CustomerOrders(ctx, q.CustomerID, q.After, q.Limit+1)
	if err != nil {
		return Page{}, err
	}
	p := Page{Orders: orders}
	if len(orders) > q.Limit {
		last := orders[q.Limit-1]
		p.Orders, p.Next = orders[:q.Limit], &Cursor{CreatedAt: last.CreatedAt, ID: last.ID}
	}
	return p, nil
}

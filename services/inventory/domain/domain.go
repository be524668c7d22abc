// Package domain is the inventory context's model: products with a price in
// minor units, stock, and reservations of stock per order. It does no I/O.
package domain

import (
	"errors"
	"fmt"
	"sort"
)

// MaxLineQuantity bounds one line of a reservation.
const MaxLineQuantity = 1000

var (
	// ErrNotFound: no such product.
	ErrNotFound = errors.New("product not found")
	// ErrInvalidReservation: the command itself is malformed.
	ErrInvalidReservation = errors.New("invalid reservation")
)

// Money is an amount in minor units of an ISO 4217 currency.
type Money struct {
	Amount   int64
	Currency string
}

// Product is a catalog entry with its stock.
type Product struct {
	ID        string
	SKU       string
	Name      string
	Price     Money
	Available int64 // units no order holds
}

// Line asks for quantity units of a product.
type Line struct {
	ProductID string
	Quantity  int64
}

// Reasons a reservation fails.
const (
	ReasonOutOfStock     = "out_of_stock"
	ReasonUnknownProduct = "unknown_product"
	// ReasonReleased: the order's stock was released before it was reserved
	// (a compensation overtook the reservation), so it must not be taken now.
	ReasonReleased = "released"
	ReasonInvalid  = "invalid"
)

// Status of a reservation.
type Status string

const (
	Held     Status = "HELD"
	Failed   Status = "FAILED"
	Released Status = "RELEASED"
)

// Reservation is the stock an order holds, or why it holds none.
type Reservation struct {
	OrderID   string
	Status    Status
	Reason    string // for Failed
	ProductID string // the line that failed, if any
	Lines     []Line
}

// NormalizeLines validates lines and merges repeats of one product, sorted by
// product id so that concurrent reservations lock rows in the same order.
func NormalizeLines(orderID string, lines []Line) ([]Line, error) {
	if orderID == "" {
		return nil, fmt.Errorf("%w: order id is required", ErrInvalidReservation)
	}
	if len(lines) == 0 {
		return nil, fmt.Errorf("%w: no lines", ErrInvalidReservation)
	}
	sum := make(map[string]int64, len(lines))
	for _, l := range lines {
		if l.ProductID == "" {
			return nil, fmt.Errorf("%w: a line has no product id", ErrInvalidReservation)
		}
		if l.Quantity < 1 || l.Quantity > MaxLineQuantity {
			return nil, fmt.Errorf("%w: quantity of %s must be 1 to %d", ErrInvalidReservation, l.ProductID, MaxLineQuantity)
		}
		sum[l.ProductID] += l.Quantity
	}
	out := make([]Line, 0, len(sum))
	for id, q := range sum {
		if q > MaxLineQuantity {
			return nil, fmt.Errorf("%w: quantity of %s must be 1 to %d", ErrInvalidReservation, id, MaxLineQuantity)
		}
		out = append(out, Line{ProductID: id, Quantity: q})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ProductID < out[j].ProductID })
	return out, nil
}

// Package adapters connects the inventory context to the outside: its SQL
// store, the catalog seed, HTTP and RPC endpoints, and its command queue.
package adapters

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/services/inventory/domain"
)

// eventWriter writes events in the caller's transaction and relays them
// once it has committed (outbox.Outbox).
type eventWriter interface {
	Add(ctx context.Context, tx *sql.Tx, events ...bus.Event) error
	Wake()
}

// Store keeps products, stock and reservations in the service's database.
type Store struct {
	db     *storage.DB
	events eventWriter
}

// NewStore returns a store on db that writes the events answering its
// changes through events, which must live in db.
func NewStore(db *storage.DB, events eventWriter) *Store { return &Store{db: db, events: events} }

const productColumns = `id, sku, name, price_amount, price_currency, available`

// Products returns the products with the given ids, or the whole catalog
// when ids is empty, ordered by SKU.
func (s *Store) Products(ctx context.Context, ids ...string) ([]domain.Product, error) {
	q := `SELECT ` + productColumns + ` FROM products`
	args := make([]any, len(ids))
	if len(ids) > 0 {
		ph := make([]string, len(ids))
		for i, id := range ids {
			ph[i] = fmt.Sprintf("$%d", i+1)
			args[i] = id
		}
		q += ` WHERE id IN (` + strings.Join(ph, ", ") + `)`
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY sku`, args...)
	if err != nil {
		return nil, fmt.Errorf("list products: %w", err)
	}
	defer rows.Close()
	var out []domain.Product
	for rows.Next() {
		var p domain.Product
		if err := rows.Scan(&p.ID, &p.SKU, &p.Name, &p.Price.Amount, &p.Price.Currency, &p.Available); err != nil {
			return nil, fmt.Errorf("list products: %w", err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// Product returns one product, or domain.ErrNotFound.
func (s *Store) Product(ctx context.Context, id string) (domain.Product, error) {
	var p domain.Product
	err := s.db.QueryRowContext(ctx, `SELECT `+productColumns+` FROM products WHERE id = $1`, id).
		Scan(&p.ID, &p.SKU, &p.Name, &p.Price.Amount, &p.Price.Currency, &p.Available)
	if errors.Is(err, sql.ErrNoRows) {
		return p, domain.ErrNotFound
	}
	if err != nil {
		return p, fmt.Errorf("get product %s: %w", id, err)
	}
	return p, nil
}

// Seed inserts products when the catalog is empty; it reports whether it did.
func (s *Store) Seed(ctx context.Context, products []domain.Product) (bool, error) {
	seeded := false
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM products`).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		for _, p := range products {
			if _, err := tx.ExecContext(ctx,
				`INSERT INTO products (`+productColumns+`) VALUES ($1, $2, $3, $4, $5, $6)`,
				p.ID, p.SKU, p.Name, p.Price.Amount, p.Price.Currency, p.Available); err != nil {
				return err
			}
		}
		seeded = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("seed catalog: %w", err)
	}
	return seeded, nil
}

// rejected ends a reservation transaction without taking stock.
type rejected struct{ reason, productID string }

func (r *rejected) Error() string { return "reservation rejected: " + r.reason }

// Reserve takes stock for every line of an order, all or nothing, and
// records the outcome under the order id. A repeated call returns the
// recorded outcome and takes nothing more. Each line is a conditional
// decrement (available >= quantity), so concurrent orders never oversell.
// lines must be normalized (domain.NormalizeLines). Every outcome, repeated
// or not, is answered with the event announce maps it to, written in the
// transaction that records or reads it.
func (s *Store) Reserve(ctx context.Context, orderID string, lines []domain.Line, announce func(domain.Reservation) bus.Event) (domain.Reservation, error) {
	res, err := s.answer(ctx, announce, func(tx *sql.Tx) (domain.Reservation, error) {
		return reserve(ctx, tx, orderID, lines)
	})
	var rej *rejected
	switch {
	case errors.As(err, &rej):
		// The rollback gave back what earlier lines took; the failure is
		// recorded, and answered, in a transaction of its own.
		res, err = s.answer(ctx, announce, func(tx *sql.Tx) (domain.Reservation, error) {
			return recordFailure(ctx, tx, orderID, rej)
		})
	case storage.IsUniqueViolation(err):
		// The same order raced itself; the winner's outcome stands.
		res, err = s.answer(ctx, announce, func(tx *sql.Tx) (domain.Reservation, error) {
			return recorded(ctx, tx, orderID)
		})
	}
	if err != nil {
		return res, fmt.Errorf("reserve stock for order %s: %w", orderID, err)
	}
	return res, nil
}

// reserve takes stock for an order in tx, or returns the outcome already
// recorded for it.
func reserve(ctx context.Context, tx *sql.Tx, orderID string, lines []domain.Line) (domain.Reservation, error) {
	if res, found, err := reservation(ctx, tx, orderID); err != nil || found {
		return res, err
	}
	if _, err := tx.ExecContext(ctx,
		`INSERT INTO reservations (order_id, status, updated_at) VALUES ($1, $2, $3)`,
		orderID, domain.Held, time.Now().UnixMicro()); err != nil {
		return domain.Reservation{}, err
	}
	for _, l := range lines {
		r, err := tx.ExecContext(ctx,
			`UPDATE products SET available = available - $1 WHERE id = $2 AND available >= $1`, l.Quantity, l.ProductID)
		if err != nil {
			return domain.Reservation{}, err
		}
		if n, err := r.RowsAffected(); err != nil || n == 0 {
			return domain.Reservation{}, rejectLine(ctx, tx, l.ProductID, err)
		}
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO reservation_lines (order_id, product_id, quantity) VALUES ($1, $2, $3)`,
			orderID, l.ProductID, l.Quantity); err != nil {
			return domain.Reservation{}, err
		}
	}
	return domain.Reservation{OrderID: orderID, Status: domain.Held, Lines: lines}, nil
}

func rejectLine(ctx context.Context, tx *sql.Tx, productID string, err error) error {
	if err != nil {
		return err
	}
	var one int
	err = tx.QueryRowContext(ctx, `SELECT 1 FROM products WHERE id = $1`, productID).Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return &rejected{reason: domain.ReasonUnknownProduct, productID: productID}
	case err != nil:
		return err
	}
	return &rejected{reason: domain.ReasonOutOfStock, productID: productID}
}

// recordFailure records a rejected reservation in tx, unless the order's
// outcome was recorded meanwhile, and returns the outcome that stands.
func recordFailure(ctx context.Context, tx *sql.Tx, orderID string, rej *rejected) (domain.Reservation, error) {
	_, err := tx.ExecContext(ctx,
		`INSERT INTO reservations (order_id, status, reason, product_id, updated_at) VALUES ($1, $2, $3, $4, $5)
		 ON CONFLICT (order_id) DO NOTHING`,
		orderID, domain.Failed, rej.reason, rej.productID, time.Now().UnixMicro())
	if err != nil {
		return domain.Reservation{}, fmt.Errorf("record failed reservation of %s: %w", orderID, err)
	}
	return recorded(ctx, tx, orderID)
}

// Release gives back the stock an order holds and marks it released. A
// release of an order that holds nothing records the release, so that a
// reservation arriving late fails instead of taking stock. released is false
// when nothing was held (already released, failed, or never reserved). Every
// outcome is answered with the event announce maps it to, written in the
// transaction that records or reads it.
func (s *Store) Release(ctx context.Context, orderID string, announce func(domain.Reservation) bus.Event) (res domain.Reservation, released bool, err error) {
	res, err = s.answer(ctx, announce, func(tx *sql.Tx) (r domain.Reservation, err error) {
		r, released, err = release(ctx, tx, orderID)
		return r, err
	})
	if storage.IsUniqueViolation(err) {
		// A concurrent first command for the order recorded it first.
		released = false
		res, err = s.answer(ctx, announce, func(tx *sql.Tx) (domain.Reservation, error) {
			return recorded(ctx, tx, orderID)
		})
	}
	if err != nil {
		return res, false, fmt.Errorf("release stock of order %s: %w", orderID, err)
	}
	return res, released, nil
}

// release gives back in tx the stock an order holds; see Release.
func release(ctx context.Context, tx *sql.Tx, orderID string) (domain.Reservation, bool, error) {
	res, found, err := reservation(ctx, tx, orderID)
	if err != nil {
		return res, false, err
	}
	now := time.Now().UnixMicro()
	if !found {
		res = domain.Reservation{OrderID: orderID, Status: domain.Released}
		_, err := tx.ExecContext(ctx, `INSERT INTO reservations (order_id, status, updated_at) VALUES ($1, $2, $3)`,
			orderID, domain.Released, now)
		return res, false, err
	}
	if res.Status != domain.Held {
		return res, false, nil
	}
	// Flip the status first: only one of two concurrent releases sees the
	// HELD row change, and only that one gives the stock back.
	r, err := tx.ExecContext(ctx, `UPDATE reservations SET status = $1, updated_at = $2 WHERE order_id = $3 AND status = $4`,
		domain.Released, now, orderID, domain.Held)
	if err != nil {
		return res, false, err
	}
	res.Status = domain.Released
	if n, err := r.RowsAffected(); err != nil || n != 1 {
		return res, false, err
	}
	for _, l := range res.Lines {
		if _, err := tx.ExecContext(ctx, `UPDATE products SET available = available + $1 WHERE id = $2`, l.Quantity, l.ProductID); err != nil {
			return res, false, err
		}
	}
	return res, true, nil
}

// Announce writes events in a transaction of their own, for an answer that
// records nothing: the failure of a malformed command.
func (s *Store) Announce(ctx context.Context, events ...bus.Event) error {
	if err := s.db.InTx(ctx, func(tx *sql.Tx) error { return s.events.Add(ctx, tx, events...) }); err != nil {
		return fmt.Errorf("announce: %w", err)
	}
	s.events.Wake()
	return nil
}

// answer runs fn in a transaction and, in the same transaction, writes the
// event that announces the outcome fn returns (transactional outbox); the
// relay is woken once it has committed.
func (s *Store) answer(ctx context.Context, announce func(domain.Reservation) bus.Event, fn func(tx *sql.Tx) (domain.Reservation, error)) (domain.Reservation, error) {
	var res domain.Reservation
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		if res, err = fn(tx); err != nil {
			return err
		}
		return s.events.Add(ctx, tx, announce(res))
	})
	if err != nil {
		return res, err
	}
	s.events.Wake()
	return res, nil
}

// Reservation returns what the store recorded for an order, or
// domain.ErrNotFound.
func (s *Store) Reservation(ctx context.Context, orderID string) (domain.Reservation, error) {
	var res domain.Reservation
	err := s.db.ReadTx(ctx, func(tx *sql.Tx) error {
		var err error
		res, err = recorded(ctx, tx, orderID)
		return err
	})
	return res, err
}

// recorded returns the outcome recorded for an order, or domain.ErrNotFound.
func recorded(ctx context.Context, tx *sql.Tx, orderID string) (domain.Reservation, error) {
	res, found, err := reservation(ctx, tx, orderID)
	if err == nil && !found {
		return res, domain.ErrNotFound
	}
	return res, err
}

func reservation(ctx context.Context, tx *sql.Tx, orderID string) (domain.Reservation, bool, error) {
	res := domain.Reservation{OrderID: orderID}
	err := tx.QueryRowContext(ctx, `SELECT status, reason, product_id FROM reservations WHERE order_id = $1`, orderID).
		Scan(&res.Status, &res.Reason, &res.ProductID)
	if errors.Is(err, sql.ErrNoRows) {
		return res, false, nil
	}
	if err != nil {
		return res, false, fmt.Errorf("read reservation of %s: %w", orderID, err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT product_id, quantity FROM reservation_lines WHERE order_id = $1 ORDER BY product_id`, orderID)
	if err != nil {
		return res, false, fmt.Errorf("read reservation lines of %s: %w", orderID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var l domain.Line
		if err := rows.Scan(&l.ProductID, &l.Quantity); err != nil {
			return res, false, err
		}
		res.Lines = append(res.Lines, l)
	}
	return res, true, rows.Err()
}

package adapters

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/mercato-shop/mercato/services/customer/domain"
)

// HistoryLimit is how many orders the history keeps per customer: the most
// recent by creation time. Older ones are pruned in the transaction of the
// event that pushes them out.
const HistoryLimit = 20

// Both upserts apply an event only over an older one (its ordinal), in a
// single statement, atomic on both engines: a duplicate or a late
// redelivery changes nothing, and two deliveries of one order at once
// cannot interleave a read and a write.
const (
	// order.created fills in what only it knows. Any status stored already
	// came from a later event (an order's first event is order.created),
	// so the status, reason, version and updated_at stay.
	recordPlaced = `INSERT INTO order_history
    (order_id, customer_id, status, reason, placed, total_amount, currency, item_count, version, created_at, updated_at)
VALUES ($1, $2, $3, '', 1, $4, $5, $6, $7, $8, $8)
ON CONFLICT (order_id) DO UPDATE SET
    placed = 1, total_amount = excluded.total_amount, currency = excluded.currency,
    item_count = excluded.item_count, created_at = excluded.created_at
WHERE order_history.placed = 0`

	// A later event heard of before order.created is stored with what it
	// says and an estimated creation time; order.created fills in the rest.
	recordChanged = `INSERT INTO order_history
    (order_id, customer_id, status, reason, version, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (order_id) DO UPDATE SET
    status = excluded.status, reason = excluded.reason, version = excluded.version, updated_at = excluded.updated_at
WHERE order_history.version < excluded.version`

	// The write lock of the customer's history: see the migration.
	lockHistory = `INSERT INTO order_history_customers (customer_id) VALUES ($1)
ON CONFLICT (customer_id) DO UPDATE SET customer_id = excluded.customer_id`

	pruneHistory = `DELETE FROM order_history WHERE customer_id = $1 AND order_id NOT IN (
    SELECT order_id FROM order_history WHERE customer_id = $1
    ORDER BY created_at DESC, order_id DESC LIMIT $2)`
)

// RecordOrderEvent applies e to its customer's order history unless the
// history holds a newer event of that order, and keeps only the customer's
// HistoryLimit most recent orders. The event is applied and the history
// pruned in one transaction.
//
// An order pruned from the history that is heard of again (a late
// order.shipped) comes back with its creation time estimated from its
// UUIDv7 id, so it is among the oldest and is pruned again at once.
func (s *Store) RecordOrderEvent(ctx context.Context, e domain.OrderEvent) error {
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		// Serializes the customer's history writes (PostgreSQL; SQLite
		// writers queue anyway), so that the prune below sees every order
		// committed before and the bound holds exactly.
		if _, err := tx.ExecContext(ctx, lockHistory, e.CustomerID()); err != nil {
			return err
		}
		var (
			res sql.Result
			err error
		)
		if e.Placed() {
			res, err = tx.ExecContext(ctx, recordPlaced,
				e.OrderID(), e.CustomerID(), string(e.Status()), e.Total().Amount, e.Total().Currency, e.ItemCount(),
				e.Ordinal(), e.At().UnixMicro())
		} else {
			res, err = tx.ExecContext(ctx, recordChanged,
				e.OrderID(), e.CustomerID(), string(e.Status()), e.Reason(), e.Ordinal(),
				e.CreatedAt().UnixMicro(), e.At().UnixMicro())
		}
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return err // nil: an older event, or a repeated one
		}
		_, err = tx.ExecContext(ctx, pruneHistory, e.CustomerID(), HistoryLimit)
		return err
	})
	if err != nil {
		return fmt.Errorf("record %s of order %s: %w", e.Status(), e.OrderID(), err)
	}
	return nil
}

// RecentOrders returns at most n orders of the customer's history, newest
// first. Orders whose order.created has not been applied yet are left out:
// their total and items are not known.
func (s *Store) RecentOrders(ctx context.Context, customerID string, n int) ([]domain.OrderSummary, error) {
	rows, err := s.db.QueryContext(ctx,
		`SELECT order_id, status, reason, total_amount, currency, item_count, created_at, updated_at
FROM order_history WHERE customer_id = $1 AND placed = 1
ORDER BY created_at DESC, order_id DESC LIMIT $2`, customerID, n)
	if err != nil {
		return nil, fmt.Errorf("select order history of %s: %w", customerID, err)
	}
	defer rows.Close()
	out := []domain.OrderSummary{}
	for rows.Next() {
		var (
			o                domain.OrderSummary
			status           string
			created, updated int64
		)
		if err := rows.Scan(&o.ID, &status, &o.Reason, &o.Total.Amount, &o.Total.Currency, &o.ItemCount, &created, &updated); err != nil {
			return nil, fmt.Errorf("scan order history of %s: %w", customerID, err)
		}
		o.Status = domain.OrderStatus(status)
		o.CreatedAt, o.UpdatedAt = time.UnixMicro(created).UTC(), time.UnixMicro(updated).UTC()
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read order history of %s: %w", customerID, err)
	}
	return out, nil
}

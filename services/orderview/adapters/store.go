package adapters

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/services/orderview/app"
	"github.com/mercato-shop/mercato/services/orderview/domain"
)

// Store answers queries from the read models.
type Store struct {
	db *storage.DB
}

// NewStore returns the queries of db.
func NewStore(db *storage.DB) *Store { return &Store{db: db} }

// CustomerOrders implements the query of app.ListOrdersHandler: one index
// range scan of (customer_id, created_at, id), from the cursor.
func (s *Store) CustomerOrders(ctx context.Context, customerID string, after *app.Cursor, limit int) ([]domain.Order, error) {
	var (
		rows *sql.Rows
		err  error
	)
	if after == nil {
		rows, err = s.db.QueryContext(ctx, `
			SELECT `+orderColumns+` FROM orders
			WHERE customer_id = $1 AND created = 1
			ORDER BY created_at DESC, id DESC LIMIT $2`, customerID, limit)
	} else {
		at := micros(after.CreatedAt)
		rows, err = s.db.QueryContext(ctx, `
			SELECT `+orderColumns+` FROM orders
			WHERE customer_id = $1 AND created = 1 AND (created_at < $2 OR (created_at = $2 AND id < $3))
			ORDER BY created_at DESC, id DESC LIMIT $4`, customerID, at, after.ID, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("orders of customer %s: %w", customerID, err)
	}
	defer rows.Close()
	var out []domain.Order
	for rows.Next() {
		o, err := scanOrder(rows)
		if err != nil {
			return nil, fmt.Errorf("orders of customer %s: %w", customerID, err)
		}
		out = append(out, *o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("orders of customer %s: %w", customerID, err)
	}
	return out, nil
}

// Package adapters connects the customer context to the outside: its SQL
// store, token signing, HTTP and RPC endpoints, and the bus.
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
	"github.com/mercato-shop/mercato/services/customer/domain"
)

// eventWriter writes events in the caller's transaction and relays them
// once it has committed (outbox.Outbox).
type eventWriter interface {
	Add(ctx context.Context, tx *sql.Tx, events ...bus.Event) error
	Wake()
}

// Store keeps customers in the service's own database.
type Store struct {
	db     *storage.DB
	events eventWriter
}

// NewStore returns a store on db that writes the events announcing its
// changes through events, which must live in db.
func NewStore(db *storage.DB, events eventWriter) *Store { return &Store{db: db, events: events} }

// Add inserts c together with the events that announce it, or returns
// domain.ErrEmailTaken and writes nothing.
func (s *Store) Add(ctx context.Context, c *domain.Customer, events ...bus.Event) error {
	// Transactional outbox: the events commit with the customer or not at all.
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx,
			`INSERT INTO customers (id, email, name, roles, password_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6)`,
			c.ID(), c.Email(), c.Name(), strings.Join(c.Roles(), ","), c.PasswordHash(), c.CreatedAt().UnixMicro())
		if err != nil {
			return err
		}
		return s.events.Add(ctx, tx, events...)
	})
	if storage.IsUniqueViolation(err) {
		return domain.ErrEmailTaken
	}
	if err != nil {
		return fmt.Errorf("add customer %s: %w", c.ID(), err)
	}
	if len(events) > 0 {
		s.events.Wake()
	}
	return nil
}

// UpdatePassword stores c's current password hash.
func (s *Store) UpdatePassword(ctx context.Context, c *domain.Customer) error {
	res, err := s.db.ExecContext(ctx, `UPDATE customers SET password_hash = $1 WHERE id = $2`, c.PasswordHash(), c.ID())
	if err != nil {
		return fmt.Errorf("update password: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return domain.ErrNotFound
	}
	return nil
}

// ByEmail finds a customer by normalized email.
func (s *Store) ByEmail(ctx context.Context, email string) (*domain.Customer, error) {
	return s.one(ctx, `WHERE email = $1`, email)
}

// ByID finds a customer by id.
func (s *Store) ByID(ctx context.Context, id string) (*domain.Customer, error) {
	return s.one(ctx, `WHERE id = $1`, id)
}

func (s *Store) one(ctx context.Context, where string, arg any) (*domain.Customer, error) {
	var (
		id, email, name, roles, hash string
		created                      int64
	)
	err := s.db.QueryRowContext(ctx,
		`SELECT id, email, name, roles, password_hash, created_at FROM customers `+where, arg).
		Scan(&id, &email, &name, &roles, &hash, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, domain.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("select customer: %w", err)
	}
	return domain.Restore(id, email, name, strings.Split(roles, ","), hash, time.UnixMicro(created)), nil
}

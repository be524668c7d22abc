// Package adapters connects the order context to the outside: its SQL
// store, HTTP and RPC endpoints, the catalog client, and the bus (saga
// commands out, participants' replies in).
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
	"github.com/mercato-shop/mercato/services/order/app"
	"github.com/mercato-shop/mercato/services/order/domain"
)

// eventWriter is the transactional outbox: events added in a transaction
// are published after it commits.
type eventWriter interface {
	Add(ctx context.Context, tx *sql.Tx, events ...bus.Event) error
	Wake()
}

// claimer is the inbox of handled messages.
type claimer interface {
	Claim(ctx context.Context, tx *sql.Tx, consumer, messageID string) (first bool, err error)
}

// Store keeps orders and their sagas in the service's database, and writes
// what a change sends (saga commands, order events) into the outbox in the
// change's transaction.
type Store struct {
	db     *storage.DB
	outbox eventWriter
	inbox  claimer
}

func NewStore(db *storage.DB, outbox eventWriter, inbox claimer) *Store {
	return &Store{db: db, outbox: outbox, inbox: inbox}
}

// Create stores a new order with its saga in one transaction. With a key
// already used for the same request it stores nothing and returns the id of
// the order made then; with a key used for another request it fails with
// domain.ErrIdempotencyMismatch.
func (s *Store) Create(ctx context.Context, o *domain.Order, saga *domain.Saga, key *app.IdempotencyKey) (existing string, err error) {
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		existing = ""
		if key != nil {
			res, err := tx.ExecContext(ctx,
				`INSERT INTO idempotency_keys (customer_id, key, request_hash, order_id, created_at) VALUES ($1, $2, $3, $4, $5)
				 ON CONFLICT (customer_id, key) DO NOTHING`,
				o.CustomerID(), key.Key, key.RequestHash, o.ID(), o.CreatedAt().UnixMicro())
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil || n == 0 {
				var hash, id string
				if err := tx.QueryRowContext(ctx, `SELECT request_hash, order_id FROM idempotency_keys WHERE customer_id = $1 AND key = $2`,
					o.CustomerID(), key.Key).Scan(&hash, &id); err != nil {
					return err
				}
				if hash != key.RequestHash {
					return domain.ErrIdempotencyMismatch
				}
				existing = id
				return nil
			}
		}
		t := o.Total()
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO orders (id, customer_id, status, reason, total_amount, currency, saga, version, created_at, updated_at)
			 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			o.ID(), o.CustomerID(), o.Status(), o.Reason(), t.Amount, t.Currency, o.Saga(), o.Version(),
			o.CreatedAt().UnixMicro(), o.UpdatedAt().UnixMicro()); err != nil {
			return err
		}
		for _, l := range o.Lines() {
			if _, err := tx.ExecContext(ctx,
				`INSERT INTO order_lines (order_id, product_id, name, quantity, unit_amount) VALUES ($1, $2, $3, $4, $5)`,
				o.ID(), l.ProductID, l.Name, l.Quantity, l.UnitPrice.Amount); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO sagas (order_id, step, awaiting, cancel_reason, payment_token, attempts, deadline, updated_at)
			 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			saga.OrderID(), saga.Step(), strings.Join(saga.Awaiting(), ","), saga.CancelReason(), saga.PaymentToken(),
			saga.Attempts(), micros(saga.Deadline()), saga.UpdatedAt().UnixMicro()); err != nil {
			return err
		}
		// Transactional outbox: the order, its announcement and the saga's
		// first command are committed together, or not at all.
		events, err := commandEvents(saga.Pending(o))
		if err != nil {
			return err
		}
		if o.Saga() == domain.Orchestrated { // a choreographed saga's first command is the announcement
			events = append([]bus.Event{createdEvent(o, "")}, events...)
		}
		return s.outbox.Add(ctx, tx, events...)
	})
	if err != nil && !errors.Is(err, domain.ErrIdempotencyMismatch) {
		return "", fmt.Errorf("create order %s: %w", o.ID(), err)
	}
	if err == nil && existing == "" {
		s.outbox.Wake()
	}
	return existing, err
}

// Order returns an order, or domain.ErrNotFound.
func (s *Store) Order(ctx context.Context, id string) (*domain.Order, error) {
	var o *domain.Order
	err := s.db.ReadTx(ctx, func(tx *sql.Tx) error {
		var err error
		o, err = loadOrder(ctx, tx, id)
		return err
	})
	return o, err
}

// Update loads an order and its saga, lets fn change them, and saves both in
// one transaction with the commands fn returns and the order's event when
// its status changed (transactional outbox). A concurrent change of the
// same order is detected by its version, and fn runs again on the fresh
// state. With a claim, the message it names is recorded in the same
// transaction (idempotent consumer); a message recorded before is skipped.
func (s *Store) Update(ctx context.Context, id string, claim *app.Claim, fn func(o *domain.Order, saga *domain.Saga) ([]domain.Command, error)) error {
	for attempt := 0; ; attempt++ {
		wrote := false
		err := s.db.InTx(ctx, func(tx *sql.Tx) error {
			wrote = false
			if claim != nil && claim.MessageID != "" {
				first, err := s.inbox.Claim(ctx, tx, claim.Consumer, claim.MessageID)
				if err != nil || !first {
					return err
				}
			}
			o, err := loadOrder(ctx, tx, id)
			if err != nil {
				return err
			}
			saga, err := loadSaga(ctx, tx, id)
			if err != nil {
				return err
			}
			before, status := o.Version(), o.Status()
			sagaBefore := domain.RestoreSaga(saga.OrderID(), saga.Step(), saga.Awaiting(),
				saga.CancelReason(), saga.PaymentToken(), saga.Attempts(), saga.Deadline(), saga.UpdatedAt())
			cmds, err := fn(o, saga)
			if err != nil {
				return err
			}
			events, err := commandEvents(cmds)
			if err != nil {
				return err
			}
			if ev, ok := changedEvent(o); ok && o.Status() != status {
				events = append(events, ev)
			}
			if err := s.outbox.Add(ctx, tx, events...); err != nil {
				return err
			}
			wrote = len(events) > 0
			if o.Version() != before {
				res, err := tx.ExecContext(ctx,
					`UPDATE orders SET status = $1, reason = $2, version = $3, updated_at = $4 WHERE id = $5 AND version = $6`,
					o.Status(), o.Reason(), o.Version(), o.UpdatedAt().UnixMicro(), id, before)
				if err != nil {
					return err
				}
				if n, err := res.RowsAffected(); err != nil || n != 1 {
					return domain.ErrConflict
				}
			}
			if saga.Equal(sagaBefore) {
				return nil
			}
			// Guarded by the state read, so two deliveries of one reply cannot
			// both advance the saga.
			res, err := tx.ExecContext(ctx,
				`UPDATE sagas SET step = $1, awaiting = $2, cancel_reason = $3, attempts = $4, deadline = $5, updated_at = $6
				 WHERE order_id = $7 AND step = $8 AND awaiting = $9 AND attempts = $10 AND updated_at = $11`,
				saga.Step(), strings.Join(saga.Awaiting(), ","), saga.CancelReason(), saga.Attempts(), micros(saga.Deadline()),
				saga.UpdatedAt().UnixMicro(),
				id, sagaBefore.Step(), strings.Join(sagaBefore.Awaiting(), ","), sagaBefore.Attempts(), sagaBefore.UpdatedAt().UnixMicro())
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil || n != 1 {
				return domain.ErrConflict
			}
			return nil
		})
		if errors.Is(err, domain.ErrConflict) && attempt < 5 {
			continue
		}
		if err == nil && wrote {
			s.outbox.Wake()
		}
		return err
	}
}

// StaleSagas returns the ids of orders whose saga is in flight and has not
// moved since before.
func (s *Store) StaleSagas(ctx context.Context, before time.Time, limit int) ([]string, error) {
	return s.ids(ctx, `SELECT order_id FROM sagas WHERE step <> $1 AND updated_at < $2 ORDER BY updated_at LIMIT $3`,
		domain.Done, before.UnixMicro(), limit)
}

func (s *Store) ids(ctx context.Context, query string, args ...any) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list sagas: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

func loadOrder(ctx context.Context, tx *sql.Tx, id string) (*domain.Order, error) {
	var (
		customer, status, reason, currency, saga string
		amount, version, created, updated        int64
	)
	err := tx.QueryRowContext(ctx,
		`SELECT customer_id, status, reason, total_amount, currency, saga, version, created_at, updated_at FROM orders WHERE id = $1`, id).
		Scan(&customer, &status, &reason, &amount, &currency, &saga, &version, &created, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, domain.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("load order %s: %w", id, err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT product_id, name, quantity, unit_amount FROM order_lines WHERE order_id = $1 ORDER BY product_id`, id)
	if err != nil {
		return nil, fmt.Errorf("load order lines %s: %w", id, err)
	}
	defer rows.Close()
	var lines []domain.Line
	for rows.Next() {
		l := domain.Line{UnitPrice: domain.Money{Currency: currency}}
		if err := rows.Scan(&l.ProductID, &l.Name, &l.Quantity, &l.UnitPrice.Amount); err != nil {
			return nil, err
		}
		lines = append(lines, l)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return domain.Restore(id, customer, domain.Status(status), reason, lines, domain.Money{Amount: amount, Currency: currency},
		saga, version, time.UnixMicro(created), time.UnixMicro(updated)), nil
}

func loadSaga(ctx context.Context, tx *sql.Tx, orderID string) (*domain.Saga, error) {
	var (
		step, awaiting, reason, token string
		attempts                      int
		deadline, updated             int64
	)
	err := tx.QueryRowContext(ctx,
		`SELECT step, awaiting, cancel_reason, payment_token, attempts, deadline, updated_at FROM sagas WHERE order_id = $1`, orderID).
		Scan(&step, &awaiting, &reason, &token, &attempts, &deadline, &updated)
	if err != nil {
		return nil, fmt.Errorf("load saga %s: %w", orderID, err)
	}
	var waits []string
	if awaiting != "" {
		waits = strings.Split(awaiting, ",")
	}
	var dl time.Time
	if deadline != 0 {
		dl = time.UnixMicro(deadline)
	}
	return domain.RestoreSaga(orderID, domain.Step(step), waits, reason, token, attempts, dl, time.UnixMicro(updated)), nil
}

// micros stores a time as unix microseconds, the zero time as 0.
func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

// ExpiredSagas returns the ids of orders whose saga step has outlived its
// deadline.
func (s *Store) ExpiredSagas(ctx context.Context, now time.Time, limit int) ([]string, error) {
	return s.ids(ctx, `SELECT order_id FROM sagas WHERE deadline > 0 AND deadline < $1 ORDER BY deadline LIMIT $2`, now.UnixMicro(), limit)
}

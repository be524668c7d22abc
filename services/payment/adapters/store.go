// Package adapters connects the payment context to the outside: its SQL
// store, the payment provider behind an anti-corruption layer, HTTP and RPC
// endpoints, and the payment-processing work queue.
package adapters

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/services/payment/domain"
)

// eventWriter is the transactional outbox (*outbox.Outbox): Add stores
// events in a transaction, and the relay, woken once it has committed,
// publishes them.
type eventWriter interface {
	Add(ctx context.Context, tx *sql.Tx, events ...bus.Event) error
	Wake()
}

// Store keeps payments in the service's database, and the events that
// announce their changes in its outbox.
type Store struct {
	db     *storage.DB
	events eventWriter
}

// NewStore returns a store on db that writes its events through events, the
// service's outbox, which lives in db.
func NewStore(db *storage.DB, events eventWriter) *Store { return &Store{db: db, events: events} }

const columns = `id, order_id, customer_id, amount, currency, status, reason, provider_charge_id, provider_refund_id, created_at, updated_at, saga`

// GetOrCreate stores p unless its order has a payment already, and returns
// the order's payment: p, or the one stored first. Concurrent calls for one
// order all return the same payment.
func (s *Store) GetOrCreate(ctx context.Context, p *domain.Payment) (*domain.Payment, error) {
	_, err := s.db.ExecContext(ctx,
		`INSERT INTO payments (`+columns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
		 ON CONFLICT (order_id) DO NOTHING`,
		p.ID(), p.OrderID(), p.CustomerID(), p.Amount().Amount, p.Amount().Currency, p.Status(), p.Reason(),
		p.ChargeID(), p.RefundID(), p.CreatedAt().UnixMicro(), p.UpdatedAt().UnixMicro(), p.Saga())
	if err != nil {
		return nil, fmt.Errorf("create payment of order %s: %w", p.OrderID(), err)
	}
	return s.ByOrder(ctx, p.OrderID())
}

// Update stores p's status, reason, provider ids and update time, only if
// the stored status is still from, and events with them. ok is false when
// another delivery moved the payment first: its change stands, and the
// events that announce it went with it, so none are added.
func (s *Store) Update(ctx context.Context, p *domain.Payment, from domain.Status, events ...bus.Event) (ok bool, err error) {
	return s.update(ctx, p, `status = $7`, from, events)
}

// UpdateUnsent is Update from PENDING for a payment whose charge was never
// marked sent (MarkSent): false when it was, or when it is settled.
func (s *Store) UpdateUnsent(ctx context.Context, p *domain.Payment, events ...bus.Event) (ok bool, err error) {
	return s.update(ctx, p, `status = $7 AND charge_sent = 0`, domain.Pending, events)
}

func (s *Store) update(ctx context.Context, p *domain.Payment, where string, from domain.Status, events []bus.Event) (ok bool, err error) {
	err = s.db.InTx(ctx, func(tx *sql.Tx) error {
		// One conditional statement: atomic on both engines, no row lock needed.
		res, err := tx.ExecContext(ctx,
			`UPDATE payments SET status = $1, reason = $2, provider_charge_id = $3, provider_refund_id = $4, updated_at = $5
			 WHERE id = $6 AND `+where,
			p.Status(), p.Reason(), p.ChargeID(), p.RefundID(), p.UpdatedAt().UnixMicro(), p.ID(), from)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if ok = n == 1; !ok {
			return nil
		}
		// Transactional outbox: the events commit with the change they
		// announce, or neither does.
		return s.events.Add(ctx, tx, events...)
	})
	if err != nil {
		return false, fmt.Errorf("update payment %s: %w", p.ID(), err)
	}
	if ok && len(events) > 0 {
		s.events.Wake()
	}
	return ok, nil
}

// MarkSent records that a charge of p may reach the provider, before it is
// sent; pending is false when p is settled already.
func (s *Store) MarkSent(ctx context.Context, p *domain.Payment) (pending bool, err error) {
	res, err := s.db.ExecContext(ctx, `UPDATE payments SET charge_sent = 1 WHERE id = $1 AND status = $2`, p.ID(), domain.Pending)
	if err != nil {
		return false, fmt.Errorf("mark charge of payment %s sent: %w", p.ID(), err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("mark charge of payment %s sent: %w", p.ID(), err)
	}
	return n == 1, nil
}

// Announce writes events that go with no change, such as the answer to a
// repeated command, in a transaction of their own. An event still pending
// is not added twice; one already published is published again, and the
// broker drops it inside the stream's Duplicates window.
func (s *Store) Announce(ctx context.Context, events ...bus.Event) error {
	err := s.db.InTx(ctx, func(tx *sql.Tx) error { return s.events.Add(ctx, tx, events...) })
	if err != nil {
		return fmt.Errorf("announce payment events: %w", err)
	}
	s.events.Wake()
	return nil
}

// ByID returns a payment, or domain.ErrNotFound.
func (s *Store) ByID(ctx context.Context, id string) (*domain.Payment, error) {
	p, err := scan(s.db.QueryRowContext(ctx, `SELECT `+columns+` FROM payments WHERE id = $1`, id))
	if err != nil {
		return nil, fmt.Errorf("get payment %s: %w", id, err)
	}
	return p, nil
}

// ByOrder returns an order's payment, or domain.ErrNotFound.
func (s *Store) ByOrder(ctx context.Context, orderID string) (*domain.Payment, error) {
	p, err := scan(s.db.QueryRowContext(ctx, `SELECT `+columns+` FROM payments WHERE order_id = $1`, orderID))
	if err != nil {
		return nil, fmt.Errorf("get payment of order %s: %w", orderID, err)
	}
	return p, nil
}

// ListByOrder returns an order's payments: none or one.
func (s *Store) ListByOrder(ctx context.Context, orderID string) ([]*domain.Payment, error) {
	p, err := s.ByOrder(ctx, orderID)
	if errors.Is(err, domain.ErrNotFound) {
		return []*domain.Payment{}, nil
	}
	if err != nil {
		return nil, err
	}
	return []*domain.Payment{p}, nil
}

func scan(row *sql.Row) (*domain.Payment, error) {
	var (
		id, orderID, customerID, status, reason, chargeID, refundID, saga string
		amount                                                            domain.Money
		created, updated                                                  int64
	)
	err := row.Scan(&id, &orderID, &customerID, &amount.Amount, &amount.Currency, &status, &reason, &chargeID, &refundID, &created, &updated, &saga)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, domain.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return domain.Restore(id, orderID, customerID, amount, domain.Status(status), reason, chargeID, refundID,
		time.UnixMicro(created), time.UnixMicro(updated), domain.InSaga(saga)), nil
}

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
	"github.com/mercato-shop/mercato/platform/eventstore"
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

// Store keeps orders as event streams (platform/eventstore), their sagas and
// shipments in the service's database, and writes what a change sends (saga
// commands, the order's events) into the outbox in the change's
// transaction: the events appended are the events published, in one write.
type Store struct {
	db        *storage.DB
	events    *eventstore.Store
	outbox    eventWriter
	inbox     claimer
	shipAfter time.Duration
}

// NewStore returns a store; a confirmed order is due to ship shipAfter
// after its confirmation.
func NewStore(db *storage.DB, events *eventstore.Store, outbox eventWriter, inbox claimer, shipAfter time.Duration) *Store {
	return &Store{db: db, events: events, outbox: outbox, inbox: inbox, shipAfter: shipAfter}
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
		if err := s.append(ctx, tx, o, 0); err != nil {
			return err
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
	return s.OrderAt(ctx, id, 0)
}

// OrderAt returns the order as it was at version (0: now), or
// domain.ErrNotFound when it has no such version.
func (s *Store) OrderAt(ctx context.Context, id string, version int64) (*domain.Order, error) {
	var o *domain.Order
	err := s.db.ReadTx(ctx, func(tx *sql.Tx) error {
		var err error
		o, err = s.load(ctx, tx, id, version)
		return err
	})
	if err == nil && version > 0 && o.Version() != version {
		return nil, domain.ErrNotFound
	}
	return o, err
}

// Events returns the order's stored events, oldest first, upcast to their
// current schema; an unknown order has none.
func (s *Store) Events(ctx context.Context, id string) ([]eventstore.Event, error) {
	var out []eventstore.Event
	err := s.db.ReadTx(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = s.events.Read(ctx, tx, id, 0, 0)
		return err
	})
	return out, err
}

// load rebuilds an order from its latest usable snapshot and the events
// after it, up to version upTo (0: all).
func (s *Store) load(ctx context.Context, tx *sql.Tx, id string, upTo int64) (*domain.Order, error) {
	var from *domain.Order
	snap, ok, err := s.events.LoadSnapshot(ctx, tx, id, upTo)
	if err != nil {
		return nil, err
	}
	if ok {
		// A snapshot is a cache of the events: one that does not decode is
		// passed over, and the order replayed from its events.
		if decoded, ok, err := decodeSnapshot(snap); err == nil && ok {
			from = decoded
		}
	}
	after := int64(0)
	if from != nil {
		after = from.Version()
	}
	stored, err := s.events.Read(ctx, tx, id, after, upTo)
	if err != nil {
		return nil, err
	}
	events, err := decodeEvents(stored)
	if err != nil {
		return nil, err
	}
	return domain.Replay(id, from, events)
}

// append stores o's new events after version before, with a snapshot when
// one is due. A stream that moved since it was read is domain.ErrConflict.
func (s *Store) append(ctx context.Context, tx *sql.Tx, o *domain.Order, before int64) error {
	changes := o.Changes()
	if len(changes) == 0 {
		return nil
	}
	evs := make([]eventstore.NewEvent, len(changes))
	for i, e := range changes {
		var err error
		if evs[i], err = encodeEvent(o.ID(), e); err != nil {
			return err
		}
	}
	if _, err := s.events.Append(ctx, tx, o.ID(), before, evs...); err != nil {
		if errors.Is(err, eventstore.ErrConflict) {
			return fmt.Errorf("%w: %w", domain.ErrConflict, err)
		}
		return err
	}
	if s.events.SnapshotDue(before, o.Version()) {
		snap, err := encodeSnapshot(o)
		if err != nil {
			return err
		}
		return s.events.SaveSnapshot(ctx, tx, snap)
	}
	return nil
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
			// The saga row first, locked on PostgreSQL: every change of an
			// order moves through it, so two commands on one order run one
			// after the other, and the second reads the events the first
			// appended. (A cancellation changes only the saga and a
			// shipment only the stream; without the lock both could commit.)
			saga, err := s.loadSaga(ctx, tx, id)
			if err != nil {
				return err
			}
			o, err := s.load(ctx, tx, id, 0)
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
			for i, e := range o.Changes() {
				if ev, ok := publishedEvent(o, e, before+int64(i)+1); ok {
					events = append(events, ev)
				}
			}
			if err := s.outbox.Add(ctx, tx, events...); err != nil {
				return err
			}
			wrote = len(events) > 0
			if err := s.append(ctx, tx, o, before); err != nil {
				return err
			}
			if err := s.schedule(ctx, tx, o, status); err != nil {
				return err
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

func (s *Store) loadSaga(ctx context.Context, tx *sql.Tx, orderID string) (*domain.Saga, error) {
	var (
		step, awaiting, reason, token string
		attempts                      int
		deadline, updated             int64
	)
	query := `SELECT step, awaiting, cancel_reason, payment_token, attempts, deadline, updated_at FROM sagas WHERE order_id = $1`
	if s.db.Dialect() == storage.Postgres {
		query += ` FOR UPDATE` // SQLite's write transactions run one at a time already
	}
	err := tx.QueryRowContext(ctx, query, orderID).
		Scan(&step, &awaiting, &reason, &token, &attempts, &deadline, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, domain.ErrNotFound
	}
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

// schedule keeps a shipment row exactly while o is CONFIRMED: one is due
// shipAfter after the order is confirmed, and it goes once the order ships
// or is cancelled. It is the durable timer of shipping.
func (s *Store) schedule(ctx context.Context, tx *sql.Tx, o *domain.Order, was domain.Status) error {
	if o.Status() == was {
		return nil
	}
	var err error
	if o.Status() == domain.Confirmed {
		_, err = tx.ExecContext(ctx, `INSERT INTO shipments (order_id, due_at) VALUES ($1, $2) ON CONFLICT (order_id) DO NOTHING`,
			o.ID(), o.UpdatedAt().Add(s.shipAfter).UnixMicro())
	} else if was == domain.Confirmed {
		_, err = tx.ExecContext(ctx, `DELETE FROM shipments WHERE order_id = $1`, o.ID())
	}
	if err != nil {
		return fmt.Errorf("schedule shipment of %s: %w", o.ID(), err)
	}
	return nil
}

// DueShipments returns the ids of confirmed orders due to ship by now whose
// saga has finished: one being cancelled waits, and does not hold up those
// due after it.
func (s *Store) DueShipments(ctx context.Context, now time.Time, limit int) ([]string, error) {
	return s.ids(ctx, `SELECT sh.order_id FROM shipments sh JOIN sagas sg ON sg.order_id = sh.order_id
		WHERE sh.due_at <= $1 AND sg.step = $2 ORDER BY sh.due_at LIMIT $3`, now.UnixMicro(), domain.Done, limit)
}

// ImportLegacy writes the orders kept as rows by versions before event
// sourcing (tables orders and order_lines) into the event store, once: an
// order that has a stream already is skipped. Each becomes its creation and
// the event of its status at its last update.
func (s *Store) ImportLegacy(ctx context.Context) (int, error) {
	type legacy struct {
		id, customer, status, reason, currency, saga string
		amount, created, updated                     int64
	}
	var orders []legacy
	err := s.db.ReadTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT id, customer_id, status, reason, currency, saga, total_amount, created_at, updated_at
			FROM orders ORDER BY created_at`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var l legacy
			if err := rows.Scan(&l.id, &l.customer, &l.status, &l.reason, &l.currency, &l.saga, &l.amount, &l.created, &l.updated); err != nil {
				return err
			}
			orders = append(orders, l)
		}
		return rows.Err()
	})
	if err != nil {
		return 0, fmt.Errorf("import legacy orders: %w", err)
	}
	imported := 0
	for _, l := range orders {
		err := s.db.InTx(ctx, func(tx *sql.Tx) error {
			v, err := s.events.Version(ctx, tx, l.id)
			if err != nil || v > 0 {
				return err
			}
			rows, err := tx.QueryContext(ctx, `SELECT product_id, name, quantity, unit_amount FROM order_lines WHERE order_id = $1 ORDER BY product_id`, l.id)
			if err != nil {
				return err
			}
			var lines []domain.Line
			for rows.Next() {
				ln := domain.Line{UnitPrice: domain.Money{Currency: l.currency}}
				if err := rows.Scan(&ln.ProductID, &ln.Name, &ln.Quantity, &ln.UnitPrice.Amount); err != nil {
					rows.Close()
					return err
				}
				lines = append(lines, ln)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			created, updated := time.UnixMicro(l.created).UTC(), time.UnixMicro(l.updated).UTC()
			events := []domain.Event{domain.OrderCreated{CustomerID: l.customer, Lines: lines, Saga: l.saga, At: created,
				Total: domain.Money{Amount: l.amount, Currency: l.currency}}}
			switch domain.Status(l.status) {
			case domain.Confirmed:
				events = append(events, domain.OrderConfirmed{At: updated})
			case domain.Cancelled:
				events = append(events, domain.OrderCancelled{Reason: l.reason, At: updated})
			case domain.Shipped:
				events = append(events, domain.OrderConfirmed{At: updated}, domain.OrderShipped{At: updated})
			}
			evs := make([]eventstore.NewEvent, len(events))
			for i, e := range events {
				if evs[i], err = encodeEvent(l.id, e); err != nil {
					return err
				}
			}
			if _, err := s.events.Append(ctx, tx, l.id, 0, evs...); err != nil {
				if errors.Is(err, eventstore.ErrConflict) || errors.Is(err, eventstore.ErrDuplicateID) {
					return nil // a replica starting beside this one imported it
				}
				return err
			}
			if domain.Status(l.status) == domain.Confirmed {
				if _, err := tx.ExecContext(ctx, `INSERT INTO shipments (order_id, due_at) VALUES ($1, $2) ON CONFLICT (order_id) DO NOTHING`,
					l.id, time.Now().Add(s.shipAfter).UnixMicro()); err != nil {
					return err
				}
			}
			imported++
			return nil
		})
		if err != nil {
			return imported, fmt.Errorf("import legacy order %s: %w", l.id, err)
		}
	}
	return imported, nil
}

// States returns the order as it was at each version after after, oldest
// first: what a status stream has not shown yet. An order's stream is a
// handful of events, so each state is replayed from the start.
func (s *Store) States(ctx context.Context, id string, after int64) ([]*domain.Order, error) {
	stored, err := s.Events(ctx, id)
	if err != nil {
		return nil, err
	}
	events, err := decodeEvents(stored)
	if err != nil {
		return nil, err
	}
	var out []*domain.Order
	for v := after + 1; v <= int64(len(events)); v++ {
		o, err := domain.Replay(id, nil, events[:v])
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, nil
}

package adapters

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/services/orderview/domain"
)

// ProjectionAnalytics names the analytics read model.
const ProjectionAnalytics = "analytics"

// Analytics is the analytics read model: the facts of each order, which
// the statistics aggregate. It reads the order stream only, apart from the
// order read model, with tables and checkpoints of its own.
type Analytics struct{}

// Name implements Projection.
func (Analytics) Name() string { return ProjectionAnalytics }

// Streams implements Projection.
func (Analytics) Streams() []string { return []string{StreamOrder} }

// Apply implements Projection.
func (Analytics) Apply(ctx context.Context, tx *sql.Tx, r bus.Record) error {
	ev, ok, err := decode(r)
	if err != nil || !ok {
		return err
	}
	var id string
	switch e := ev.(type) {
	case domain.OrderCreated:
		id = e.OrderID
	case domain.OrderConfirmed:
		id = e.OrderID
	case domain.OrderCancelled:
		id = e.OrderID
	default:
		return nil
	}
	f, err := loadFacts(ctx, tx, id)
	if err != nil {
		return err
	}
	if !f.Apply(ev) {
		return nil
	}
	return saveFacts(ctx, tx, f)
}

// Reset implements Projection.
func (Analytics) Reset(ctx context.Context, tx *sql.Tx) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM order_facts`); err != nil {
		return fmt.Errorf("empty order_facts: %w", err)
	}
	return nil
}

func loadFacts(ctx context.Context, tx *sql.Tx, id string) (*domain.Facts, error) {
	f := domain.Facts{OrderID: id}
	var created int
	var createdAt, confirmedAt, cancelledAt int64
	err := tx.QueryRowContext(ctx, `
		SELECT created, saga, total_amount, currency, created_at, confirmed_at, cancelled_at, reason
		FROM order_facts WHERE order_id = $1`, id).
		Scan(&created, &f.Saga, &f.Total.Amount, &f.Total.Currency, &createdAt, &confirmedAt, &cancelledAt, &f.Reason)
	if errors.Is(err, sql.ErrNoRows) {
		return &f, nil
	}
	if err != nil {
		return nil, fmt.Errorf("facts of order %s: %w", id, err)
	}
	f.Created = created == 1
	f.CreatedAt, f.ConfirmedAt, f.CancelledAt = fromMicros(createdAt), fromMicros(confirmedAt), fromMicros(cancelledAt)
	return &f, nil
}

func saveFacts(ctx context.Context, tx *sql.Tx, f *domain.Facts) error {
	created := 0
	if f.Created {
		created = 1
	}
	var hour int64
	if h, ok := f.ConfirmedHour(); ok {
		hour = h.Unix()
	}
	outcome, _ := f.Outcome()
	durationMS := int64(-1)
	if d, ok := f.Duration(); ok {
		durationMS = d.Milliseconds()
	}
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO order_facts (order_id, created, saga, total_amount, currency, created_at, confirmed_at, cancelled_at,
			reason, confirmed_hour, outcome, duration_ms)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
		ON CONFLICT (order_id) DO UPDATE SET
			created = excluded.created, saga = excluded.saga, total_amount = excluded.total_amount,
			currency = excluded.currency, created_at = excluded.created_at, confirmed_at = excluded.confirmed_at,
			cancelled_at = excluded.cancelled_at, reason = excluded.reason, confirmed_hour = excluded.confirmed_hour,
			outcome = excluded.outcome, duration_ms = excluded.duration_ms`,
		f.OrderID, created, f.Saga, f.Total.Amount, f.Total.Currency, micros(f.CreatedAt), micros(f.ConfirmedAt),
		micros(f.CancelledAt), f.Reason, hour, outcome, durationMS); err != nil {
		return fmt.Errorf("facts of order %s: %w", f.OrderID, err)
	}
	return nil
}

// Stats aggregates the analytics read model.
func (s *Store) Stats(ctx context.Context) (domain.Stats, error) {
	var st domain.Stats
	err := s.db.ReadTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `
			SELECT confirmed_hour, currency, COUNT(*), CAST(SUM(total_amount) AS BIGINT)
			FROM order_facts WHERE confirmed_hour <> 0
			GROUP BY confirmed_hour, currency ORDER BY confirmed_hour, currency`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var h domain.HourlyRevenue
			var hour int64
			if err := rows.Scan(&hour, &h.Revenue.Currency, &h.Orders, &h.Revenue.Amount); err != nil {
				rows.Close()
				return err
			}
			h.Hour = time.Unix(hour, 0).UTC()
			st.Hourly = append(st.Hourly, h)
		}
		if err := closeRows(rows); err != nil {
			return err
		}

		rows, err = tx.QueryContext(ctx, `
			SELECT reason, COUNT(*) FROM order_facts WHERE cancelled_at <> 0 GROUP BY reason ORDER BY reason`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var c domain.Cancellations
			if err := rows.Scan(&c.Reason, &c.Orders); err != nil {
				rows.Close()
				return err
			}
			st.Cancellations = append(st.Cancellations, c)
		}
		if err := closeRows(rows); err != nil {
			return err
		}

		rows, err = tx.QueryContext(ctx, `
			SELECT saga, outcome, COUNT(*), CAST(SUM(duration_ms) AS BIGINT), MAX(duration_ms)
			FROM order_facts WHERE created = 1
			GROUP BY saga, outcome ORDER BY saga, outcome`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var saga, outcome string
			var n, sumMS, maxMS int64
			if err := rows.Scan(&saga, &outcome, &n, &sumMS, &maxMS); err != nil {
				rows.Close()
				return err
			}
			if len(st.Sagas) == 0 || st.Sagas[len(st.Sagas)-1].Saga != saga {
				st.Sagas = append(st.Sagas, domain.SagaStats{Saga: saga})
			}
			ss := &st.Sagas[len(st.Sagas)-1]
			switch outcome {
			case domain.OutcomeConfirmed:
				ss.Confirmed = n
			case domain.OutcomeCancelled:
				ss.Cancelled = n
			default:
				ss.InFlight = n
				continue
			}
			ss.Durations.Count += n
			ss.Durations.Total += time.Duration(sumMS) * time.Millisecond
			ss.Durations.Max = max(ss.Durations.Max, time.Duration(maxMS)*time.Millisecond)
		}
		return closeRows(rows)
	})
	if err != nil {
		return domain.Stats{}, fmt.Errorf("statistics: %w", err)
	}
	return st, nil
}

func closeRows(rows *sql.Rows) error {
	if err := rows.Err(); err != nil {
		rows.Close()
		return err
	}
	return rows.Close()
}

package domain

import "time"

// Saga outcomes.
const (
	OutcomeConfirmed = "confirmed"
	OutcomeCancelled = "cancelled"
)

// Facts is what the analytics read model keeps of one order. Each fact is
// written once, by the first event that states it, so a repeated event
// changes nothing and a late one fills its gap; the statistics are
// aggregates of these rows, never counters bumped per event, which a
// duplicate would inflate.
type Facts struct {
	OrderID string
	// From order.created; Created tells whether it has arrived.
	Created   bool
	Saga      string
	Total     Money
	CreatedAt time.Time
	// Zero until the order is confirmed, or cancelled.
	ConfirmedAt time.Time
	CancelledAt time.Time
	Reason      string
}

// Apply records what ev states about the order and reports whether a fact
// was new. order.shipped and other events add nothing.
func (f *Facts) Apply(ev any) bool {
	switch e := ev.(type) {
	case OrderCreated:
		if f.Created {
			return false
		}
		f.Created, f.Saga, f.Total, f.CreatedAt = true, e.Saga, e.Total, e.CreatedAt
		return true
	case OrderConfirmed:
		if !f.ConfirmedAt.IsZero() {
			return false
		}
		f.ConfirmedAt = e.ConfirmedAt
		return true
	case OrderCancelled:
		if !f.CancelledAt.IsZero() {
			return false
		}
		f.CancelledAt, f.Reason = e.CancelledAt, e.Reason
		return true
	}
	return false
}

// Outcome is how the order's saga ended: confirmed when the order was ever
// confirmed (a customer may cancel it later, which does not undo the saga's
// success), cancelled when it was cancelled without being confirmed, "" while
// it runs. At is when it ended.
func (f *Facts) Outcome() (outcome string, at time.Time) {
	switch {
	case !f.ConfirmedAt.IsZero():
		return OutcomeConfirmed, f.ConfirmedAt
	case !f.CancelledAt.IsZero():
		return OutcomeCancelled, f.CancelledAt
	}
	return "", time.Time{}
}

// Duration is the time from order.created to the saga's outcome; ok is
// false until both are known.
func (f *Facts) Duration() (d time.Duration, ok bool) {
	_, at := f.Outcome()
	if !f.Created || at.IsZero() {
		return 0, false
	}
	return max(at.Sub(f.CreatedAt), 0), true
}

// ConfirmedHour is the start of the UTC hour the order was confirmed in,
// once both its confirmation and its total are known; ok is false before.
func (f *Facts) ConfirmedHour() (hour time.Time, ok bool) {
	if !f.Created || f.ConfirmedAt.IsZero() {
		return time.Time{}, false
	}
	return f.ConfirmedAt.UTC().Truncate(time.Hour), true
}

// Stats are the analytics read model's aggregates.
type Stats struct {
	// Confirmed orders and their revenue per hour of confirmation and
	// currency, oldest hour first.
	Hourly []HourlyRevenue
	// Cancelled orders per reason, by reason.
	Cancellations []Cancellations
	// Per saga mode, by mode.
	Sagas []SagaStats
}

// HourlyRevenue is what the orders confirmed in one hour brought in one currency.
type HourlyRevenue struct {
	Hour    time.Time
	Orders  int64
	Revenue Money
}

// Cancellations counts the orders cancelled for one reason.
type Cancellations struct {
	Reason string
	Orders int64
}

// SagaStats are the outcomes of one saga mode and how long its sagas took
// from order.created to their outcome.
type SagaStats struct {
	Saga      string
	Confirmed int64
	Cancelled int64
	// InFlight: created, with no outcome yet.
	InFlight int64
	// Over the sagas with an outcome.
	Durations Durations
}

// Durations summarises saga durations.
type Durations struct {
	Count int64
	Total time.Duration
	Max   time.Duration
}

// Avg is the mean duration, 0 for none.
func (d Durations) Avg() time.Duration {
	if d.Count == 0 {
		return 0
	}
	return d.Total / time.Duration(d.Count)
}

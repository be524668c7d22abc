package domain

import (
	"time"
)

// Step is where an orchestrated saga stands: the command it has sent and
// the reply it waits for.
type Step string

const (
	Reserving Step = "RESERVING" // sent ReserveStock, awaits inventory.reserved or inventory.failed
	Charging  Step = "CHARGING"  // sent ChargePayment, awaits payment.completed or payment.failed
	Releasing Step = "RELEASING" // compensating: sent ReleaseStock, awaits inventory.released
	Done      Step = "DONE"
)

// Saga is the orchestrated order saga of the playbook: reserve stock ->
// charge payment -> confirm; a failed step compensates the completed ones in
// reverse (release stock) and cancels the order with a reason. Its state is
// stored with the order, so a restarted process resumes it.
type Saga struct {
	orderID      string
	step         Step
	cancelReason string // the reason the order will be cancelled with, once compensated
	paymentToken string
	attempts     int
	updatedAt    time.Time
}

// NewSaga starts a saga for o; its first command is Pending().
func NewSaga(o *Order, paymentToken string, now time.Time) *Saga {
	return &Saga{orderID: o.ID(), step: Reserving, paymentToken: paymentToken, updatedAt: now.UTC()}
}

// RestoreSaga rebuilds a saga from storage.
func RestoreSaga(orderID string, step Step, cancelReason, paymentToken string, attempts int, updatedAt time.Time) *Saga {
	return &Saga{orderID: orderID, step: step, cancelReason: cancelReason, paymentToken: paymentToken, attempts: attempts, updatedAt: updatedAt.UTC()}
}

func (s *Saga) OrderID() string      { return s.orderID }
func (s *Saga) Step() Step           { return s.step }
func (s *Saga) CancelReason() string { return s.cancelReason }
func (s *Saga) PaymentToken() string { return s.paymentToken }
func (s *Saga) Attempts() int        { return s.attempts }
func (s *Saga) UpdatedAt() time.Time { return s.updatedAt }

// Command is what the saga asks another context to do.
type Command interface{ command() }

// ReserveStock asks inventory to hold the order's lines.
type ReserveStock struct {
	OrderID string
	Lines   []Line
}

// ChargePayment asks payment to capture the order's total.
type ChargePayment struct {
	OrderID, CustomerID string
	Amount              Money
	Token               string
}

// ReleaseStock asks inventory to give back what the order holds.
type ReleaseStock struct {
	OrderID, Reason string
}

func (ReserveStock) command()  {}
func (ChargePayment) command() {}
func (ReleaseStock) command()  {}

// Reply is an answer from a participant.
type Reply struct {
	Kind   ReplyKind
	Reason string // for failures
}

// ReplyKind names the participant's answer.
type ReplyKind string

const (
	StockReserved    ReplyKind = "inventory.reserved"
	StockFailed      ReplyKind = "inventory.failed"
	StockReleased    ReplyKind = "inventory.released"
	PaymentCompleted ReplyKind = "payment.completed"
	PaymentFailed    ReplyKind = "payment.failed"
)

// Pending is the command of the current step: sent when the step begins,
// and sent again when the saga resumes after a restart or a lost message.
// Participants handle commands idempotently, so a repeat is harmless.
func (s *Saga) Pending(o *Order) Command {
	switch s.step {
	case Reserving:
		return ReserveStock{OrderID: o.ID(), Lines: o.Lines()}
	case Charging:
		return ChargePayment{OrderID: o.ID(), CustomerID: o.CustomerID(), Amount: o.Total(), Token: s.paymentToken}
	case Releasing:
		return ReleaseStock{OrderID: o.ID(), Reason: s.cancelReason}
	}
	return nil
}

// Handle applies a reply to the saga and its order. It returns the next
// command to send, if any, and whether anything changed: a reply the current
// step does not wait for (a duplicate, or one that arrives late) changes
// nothing.
func (s *Saga) Handle(o *Order, r Reply, now time.Time) (next Command, changed bool, err error) {
	switch {
	case s.step == Reserving && r.Kind == StockReserved:
		s.advance(Charging, now)
	case s.step == Reserving && r.Kind == StockFailed:
		// Nothing was taken, so nothing to compensate.
		s.advance(Done, now)
		return nil, true, o.Cancel(ReasonOutOfStock, now)
	case s.step == Charging && r.Kind == PaymentCompleted:
		s.advance(Done, now)
		return nil, true, o.Confirm(now)
	case s.step == Charging && r.Kind == PaymentFailed:
		// Compensate the completed step: give the stock back.
		s.cancelReason = ReasonPaymentDeclined
		s.advance(Releasing, now)
	case s.step == Releasing && r.Kind == StockReleased:
		s.advance(Done, now)
		return nil, true, o.Cancel(s.cancelReason, now)
	default:
		return nil, false, nil
	}
	return s.Pending(o), true, nil
}

// Retried records that the pending command was sent again.
func (s *Saga) Retried(now time.Time) {
	s.attempts++
	s.updatedAt = now.UTC()
}

func (s *Saga) advance(step Step, now time.Time) {
	s.step, s.attempts, s.updatedAt = step, 0, now.UTC()
}

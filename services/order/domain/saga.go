package domain

import (
	"slices"
	"time"
)

// Step is where an orchestrated saga stands: the command it has sent and
// the reply it waits for.
type Step string

const (
	Reserving    Step = "RESERVING"    // sent ReserveStock, awaits inventory.reserved or inventory.failed
	Charging     Step = "CHARGING"     // sent ChargePayment, awaits payment.completed or payment.failed
	Compensating Step = "COMPENSATING" // undoing completed steps, awaits every reply in Awaiting
	Done         Step = "DONE"
	// Reacting: a choreographed saga. The order announced itself and the
	// other contexts react to each other's events: payment charges on
	// order.created, inventory reserves on payment.completed, payment
	// refunds on inventory.failed. The order only listens for the outcome.
	Reacting Step = "REACTING"
)

// Compensations the saga may wait for.
const (
	AwaitRelease = "release" // ReleaseStock sent, awaits inventory.released
	AwaitRefund  = "refund"  // RefundPayment sent, awaits payment.refunded
)

// More reasons an order is cancelled.
const (
	ReasonCustomerCancelled = "customer_cancelled"
	ReasonTimeout           = "timeout"
)

// Saga is the orchestrated order saga of the playbook: reserve stock ->
// charge payment -> confirm. A failed step, a step that outlives its
// deadline, or the customer's cancellation compensates the steps that may
// have completed, in reverse (refund, release), and only then cancels the
// order with its reason. Its state is stored with the order, so a restarted
// process resumes it.
type Saga struct {
	orderID      string
	step         Step
	awaiting     []string // compensations not answered yet
	cancelReason string   // the reason the order is cancelled with, once compensated
	paymentToken string
	attempts     int
	deadline     time.Time // when the current forward step times out; zero for none
	updatedAt    time.Time
}

// NewSaga starts a saga for o in o's mode; its first commands are
// Pending(o). A forward step that gets no reply within stepTimeout is
// compensated; a choreographed flow gets twice that, for its two steps.
func NewSaga(o *Order, paymentToken string, now time.Time, stepTimeout time.Duration) *Saga {
	s := &Saga{orderID: o.ID(), paymentToken: paymentToken}
	if o.Saga() == Choreographed {
		s.advance(Reacting, now, 2*stepTimeout)
		return s
	}
	s.advance(Reserving, now, stepTimeout)
	return s
}

// RestoreSaga rebuilds a saga from storage.
func RestoreSaga(orderID string, step Step, awaiting []string, cancelReason, paymentToken string, attempts int, deadline, updatedAt time.Time) *Saga {
	s := &Saga{orderID: orderID, step: step, awaiting: awaiting, cancelReason: cancelReason, paymentToken: paymentToken,
		attempts: attempts, updatedAt: updatedAt.UTC()}
	if !deadline.IsZero() {
		s.deadline = deadline.UTC()
	}
	return s
}

func (s *Saga) OrderID() string      { return s.orderID }
func (s *Saga) Step() Step           { return s.step }
func (s *Saga) Awaiting() []string   { return slices.Clone(s.awaiting) }
func (s *Saga) CancelReason() string { return s.cancelReason }
func (s *Saga) PaymentToken() string { return s.paymentToken }
func (s *Saga) Attempts() int        { return s.attempts }
func (s *Saga) Deadline() time.Time  { return s.deadline }
func (s *Saga) UpdatedAt() time.Time { return s.updatedAt }

// Equal reports whether two sagas hold the same state.
func (s *Saga) Equal(o *Saga) bool {
	return s.orderID == o.orderID && s.step == o.step && slices.Equal(s.awaiting, o.awaiting) &&
		s.cancelReason == o.cancelReason && s.paymentToken == o.paymentToken && s.attempts == o.attempts &&
		s.deadline.Equal(o.deadline) && s.updatedAt.Equal(o.updatedAt)
}

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

// RefundPayment asks payment to give back what the order paid.
type RefundPayment struct {
	OrderID, Reason string
}

// AnnounceOrder publishes order.created: the first move of a choreographed
// saga, repeated on resume until the outcome arrives.
type AnnounceOrder struct {
	Order        *Order
	PaymentToken string
}

func (AnnounceOrder) command() {}
func (ReserveStock) command()  {}
func (ChargePayment) command() {}
func (ReleaseStock) command()  {}
func (RefundPayment) command() {}

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
	PaymentRefunded  ReplyKind = "payment.refunded"
)

// PaymentProviderUnavailable is payment.failed's reason when the payment
// provider was down and the charge was never sent.
const PaymentProviderUnavailable = "provider_unavailable"

// paymentFailure is the order's cancel reason for payment.failed's reason.
func paymentFailure(reason string) string {
	if reason == PaymentProviderUnavailable {
		return ReasonPaymentUnavailable
	}
	return ReasonPaymentDeclined
}

// Pending are the commands of the current step: sent when the step begins,
// and sent again when the saga resumes after a restart or a lost message.
// Participants handle commands idempotently, so a repeat is harmless.
func (s *Saga) Pending(o *Order) []Command {
	switch s.step {
	case Reserving:
		return []Command{ReserveStock{OrderID: o.ID(), Lines: o.Lines()}}
	case Charging:
		return []Command{ChargePayment{OrderID: o.ID(), CustomerID: o.CustomerID(), Amount: o.Total(), Token: s.paymentToken}}
	case Reacting:
		return []Command{AnnounceOrder{Order: o, PaymentToken: s.paymentToken}}
	case Compensating:
		var cmds []Command
		// Reverse order of the forward steps: the payment first, then the stock.
		if slices.Contains(s.awaiting, AwaitRefund) {
			cmds = append(cmds, RefundPayment{OrderID: o.ID(), Reason: s.cancelReason})
		}
		if slices.Contains(s.awaiting, AwaitRelease) {
			cmds = append(cmds, ReleaseStock{OrderID: o.ID(), Reason: s.cancelReason})
		}
		return cmds
	}
	return nil
}

// Handle applies a reply to the saga and its order. It returns the commands
// to send next and whether anything changed: a reply the current step does
// not wait for (a duplicate, or one that arrives late) changes nothing.
func (s *Saga) Handle(o *Order, r Reply, now time.Time, stepTimeout time.Duration) (next []Command, changed bool, err error) {
	switch {
	case s.step == Reserving && r.Kind == StockReserved:
		s.advance(Charging, now, stepTimeout)
	case s.step == Reserving && r.Kind == StockFailed:
		// Nothing was taken, so nothing to compensate.
		s.advance(Done, now, 0)
		return nil, true, o.Cancel(ReasonOutOfStock, now)
	case s.step == Charging && r.Kind == PaymentCompleted:
		s.advance(Done, now, 0)
		return nil, true, o.Confirm(now)
	case s.step == Charging && r.Kind == PaymentFailed:
		// Nothing was captured; compensate the reservation.
		s.compensate(paymentFailure(r.Reason), now, AwaitRelease)
	// Choreography: the same outcomes and reasons, read from the events.
	case s.step == Reacting && r.Kind == StockReserved:
		s.advance(Done, now, 0)
		return nil, true, o.Confirm(now)
	case s.step == Reacting && r.Kind == PaymentFailed:
		s.advance(Done, now, 0)
		return nil, true, o.Cancel(paymentFailure(r.Reason), now)
	case s.step == Reacting && r.Kind == StockFailed:
		// Payment refunds on the same event; the order waits for it.
		s.cancelReason, s.awaiting = ReasonOutOfStock, []string{AwaitRefund}
		s.updatedAt = now.UTC()
		return nil, true, nil
	case s.step == Reacting && r.Kind == PaymentRefunded:
		// Only inventory.failed makes payment refund a choreographed order;
		// its event may reach the order after payment's answer to it.
		s.advance(Done, now, 0)
		return nil, true, o.Cancel(ReasonOutOfStock, now)
	// Inventory answers a release with inventory.failed when the reservation
	// had failed: nothing is held either way.
	case s.step == Compensating && (r.Kind == StockReleased || r.Kind == StockFailed) && slices.Contains(s.awaiting, AwaitRelease):
		return nil, true, s.answered(o, AwaitRelease, now)
	case s.step == Compensating && r.Kind == PaymentRefunded && slices.Contains(s.awaiting, AwaitRefund):
		return nil, true, s.answered(o, AwaitRefund, now)
	default:
		return nil, false, nil
	}
	return s.Pending(o), true, nil
}

// Cancel starts compensating on the customer's behalf. It is allowed until
// the order ships; a saga already compensating or finished with a cancelled
// order changes nothing.
func (s *Saga) Cancel(o *Order, now time.Time) ([]Command, bool, error) {
	switch {
	case o.Status() == Shipped:
		return nil, false, ErrInvalidTransition
	case o.Status() == Cancelled, s.step == Compensating:
		return nil, false, nil
	case s.step == Reserving:
		// The reservation may land after this; the release then undoes it,
		// or, arriving first, blocks it.
		s.compensate(ReasonCustomerCancelled, now, AwaitRelease)
	default: // charging, reacting, or confirmed: a capture may exist
		s.compensate(ReasonCustomerCancelled, now, AwaitRefund, AwaitRelease)
	}
	return s.Pending(o), true, nil
}

// Expire compensates a forward step whose deadline has passed. A late reply
// of that step is then ignored, and what it did is undone: a late capture
// is refunded, a late reservation released.
func (s *Saga) Expire(o *Order, now time.Time) ([]Command, bool) {
	if s.deadline.IsZero() || now.Before(s.deadline) {
		return nil, false
	}
	switch s.step {
	case Reserving:
		s.compensate(ReasonTimeout, now, AwaitRelease)
	case Charging, Reacting:
		s.compensate(ReasonTimeout, now, AwaitRefund, AwaitRelease)
	default:
		return nil, false
	}
	return s.Pending(o), true
}

// Retried records that the pending commands were sent again.
func (s *Saga) Retried(now time.Time) {
	s.attempts++
	s.updatedAt = now.UTC()
}

func (s *Saga) compensate(reason string, now time.Time, awaiting ...string) {
	s.cancelReason = reason
	s.awaiting = awaiting
	s.advance(Compensating, now, 0)
}

// answered removes one compensation; the last one cancels the order.
func (s *Saga) answered(o *Order, what string, now time.Time) error {
	s.awaiting = slices.DeleteFunc(slices.Clone(s.awaiting), func(a string) bool { return a == what })
	s.updatedAt = now.UTC()
	if len(s.awaiting) > 0 {
		return nil
	}
	s.advance(Done, now, 0)
	return o.Cancel(s.cancelReason, now)
}

func (s *Saga) advance(step Step, now time.Time, timeout time.Duration) {
	s.step, s.attempts, s.updatedAt = step, 0, now.UTC()
	s.deadline = time.Time{}
	if timeout > 0 {
		s.deadline = now.Add(timeout).UTC()
	}
}

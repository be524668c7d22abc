// Package domain is the payment context's model: one payment per order, its
// status from PENDING to a final outcome, and money as integer minor units.
// It does no I/O and knows nothing of the payment provider's model.
package domain

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

var (
	// ErrNotFound: no such payment.
	ErrNotFound = errors.New("payment not found")
	// ErrInvalidCommand: a charge or refund command that is malformed.
	ErrInvalidCommand = errors.New("invalid payment command")
	// ErrInvalidAmount: an amount that is not a non-negative decimal with at most two decimals.
	ErrInvalidAmount = errors.New("invalid amount")
	// ErrUnsupportedCurrency: a currency without two minor digits, or unknown.
	ErrUnsupportedCurrency = errors.New("unsupported currency")
	// ErrTransition: the payment's status does not allow the change.
	ErrTransition = errors.New("invalid payment status transition")
	// ErrChargeInProgress: a refund met a charge not yet settled; retry later.
	ErrChargeInProgress = errors.New("charge in progress")
	// ErrProviderUnavailable: the provider did not answer usefully (5xx,
	// timeout, connection error). Retrying with the same idempotency key is
	// safe.
	ErrProviderUnavailable = errors.New("payment provider unavailable")
	// ErrProviderRejected: the provider refused the request itself (not the
	// card): a request it cannot accept, or state it does not have.
	ErrProviderRejected = errors.New("payment provider rejected the request")
	// ErrProviderDown: the provider is known to be failing (its circuit
	// breaker is open) and the request was not sent, so nothing happened
	// there. Errors wrapping it wrap ErrProviderUnavailable too.
	ErrProviderDown = errors.New("payment provider down, request not sent")
)

// Status of a payment.
type Status string

const (
	// Pending: created, the provider not yet asked or not yet answered.
	Pending Status = "PENDING"
	// Captured: the provider took the money.
	Captured Status = "CAPTURED"
	// Declined: the provider refused the card.
	Declined Status = "DECLINED"
	// Refunded: captured, then given back.
	Refunded Status = "REFUNDED"
	// Voided: the order was refunded before it was charged, so it never will be.
	Voided Status = "VOIDED"
)

// Reasons a payment fails.
const (
	ReasonDeclined = "payment_declined"
	ReasonVoided   = "voided"
	ReasonInvalid  = "invalid"
	// ReasonProviderUnavailable: the provider was down when the charge was
	// due, and it was never sent; the customer may try again later.
	ReasonProviderUnavailable = "provider_unavailable"
)

// Payment is the payment of one order. Build one with NewPayment, NewVoided
// or Restore; change it only through its transitions.
type Payment struct {
	id         string
	orderID    string
	customerID string
	amount     Money
	status     Status
	reason     string
	chargeID   string // the provider's charge
	refundID   string // the provider's refund
	createdAt  time.Time
	updatedAt  time.Time
	saga       string // the order's saga mode
}

// Saga modes of the order a payment belongs to.
const (
	Orchestrated  = "orchestrated"  // charged and refunded on the order saga's commands
	Choreographed = "choreographed" // charged on order.created, refunded on inventory.failed
)

// Option sets what a payment is created or restored with.
type Option func(*Payment)

// InSaga records the saga mode of the payment's order (default orchestrated).
func InSaga(mode string) Option {
	return func(p *Payment) {
		if mode != "" {
			p.saga = mode
		}
	}
}

// NewPayment validates a charge and returns its PENDING payment with a
// UUIDv7 id. Errors wrap ErrInvalidCommand.
func NewPayment(orderID, customerID string, amount Money, now time.Time, opts ...Option) (*Payment, error) {
	switch {
	case orderID == "":
		return nil, fmt.Errorf("%w: order id is required", ErrInvalidCommand)
	case customerID == "":
		return nil, fmt.Errorf("%w: customer id is required", ErrInvalidCommand)
	case amount.Amount <= 0:
		return nil, fmt.Errorf("%w: amount must be positive, got %d", ErrInvalidCommand, amount.Amount)
	case !SupportedCurrency(amount.Currency):
		return nil, fmt.Errorf("%w: %w: %q", ErrInvalidCommand, ErrUnsupportedCurrency, amount.Currency)
	}
	now = now.UTC()
	p := &Payment{
		id: uuid.Must(uuid.NewV7()).String(), orderID: orderID, customerID: customerID,
		amount: amount, status: Pending, createdAt: now, updatedAt: now, saga: Orchestrated,
	}
	for _, o := range opts {
		o(p)
	}
	return p, nil
}

// NewVoided returns the tombstone of an order refunded before any charge:
// stored under the order id, it makes a charge that arrives late fail
// instead of capturing.
func NewVoided(orderID string, now time.Time) *Payment {
	now = now.UTC()
	return &Payment{
		id: uuid.Must(uuid.NewV7()).String(), orderID: orderID,
		status: Voided, reason: ReasonVoided, createdAt: now, updatedAt: now, saga: Orchestrated,
	}
}

// Restore rebuilds a payment from storage.
func Restore(id, orderID, customerID string, amount Money, status Status, reason, chargeID, refundID string, createdAt, updatedAt time.Time, opts ...Option) *Payment {
	p := &Payment{
		id: id, orderID: orderID, customerID: customerID, amount: amount, status: status, reason: reason,
		chargeID: chargeID, refundID: refundID, createdAt: createdAt.UTC(), updatedAt: updatedAt.UTC(), saga: Orchestrated,
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func (p *Payment) ID() string           { return p.id }
func (p *Payment) OrderID() string      { return p.orderID }
func (p *Payment) CustomerID() string   { return p.customerID }
func (p *Payment) Amount() Money        { return p.amount }
func (p *Payment) Status() Status       { return p.status }
func (p *Payment) Reason() string       { return p.reason }
func (p *Payment) ChargeID() string     { return p.chargeID }
func (p *Payment) RefundID() string     { return p.refundID }
func (p *Payment) CreatedAt() time.Time { return p.createdAt }
func (p *Payment) UpdatedAt() time.Time { return p.updatedAt }
func (p *Payment) Saga() string         { return p.saga }

// Settled reports whether the charge has an outcome: every status but PENDING.
func (p *Payment) Settled() bool { return p.status != Pending }

// Paid reports whether the charge captured money, refunded since or not.
func (p *Payment) Paid() bool { return p.status == Captured || p.status == Refunded }

// RefundedAmount is what a refund gave back: the amount once REFUNDED,
// zero otherwise.
func (p *Payment) RefundedAmount() Money {
	if p.status == Refunded {
		return p.amount
	}
	return Money{Currency: p.amount.Currency}
}

// Capture records that the provider took the money as charge chargeID.
func (p *Payment) Capture(chargeID string, now time.Time) error {
	if p.status != Pending {
		return fmt.Errorf("%w: capture a %s payment", ErrTransition, p.status)
	}
	if chargeID == "" {
		return fmt.Errorf("%w: capture without a charge id", ErrTransition)
	}
	p.status, p.chargeID, p.updatedAt = Captured, chargeID, now.UTC()
	return nil
}

// Decline records that the provider refused the card; chargeID may be empty.
func (p *Payment) Decline(reason, chargeID string, now time.Time) error {
	if p.status != Pending {
		return fmt.Errorf("%w: decline a %s payment", ErrTransition, p.status)
	}
	if reason == "" {
		reason = ReasonDeclined
	}
	p.status, p.reason, p.chargeID, p.updatedAt = Declined, reason, chargeID, now.UTC()
	return nil
}

// Refund records that the provider gave the captured amount back as refund refundID.
func (p *Payment) Refund(refundID string, now time.Time) error {
	if p.status != Captured {
		return fmt.Errorf("%w: refund a %s payment", ErrTransition, p.status)
	}
	if refundID == "" {
		return fmt.Errorf("%w: refund without a refund id", ErrTransition)
	}
	p.status, p.refundID, p.updatedAt = Refunded, refundID, now.UTC()
	return nil
}

// ChargeOutcome is the provider's answer to a charge, in the shop's terms.
type ChargeOutcome struct {
	ChargeID string // the provider's charge, when it made one
	Declined bool
	Reason   string // why, when Declined
}

// Settle applies the provider's answer to a PENDING payment.
func (p *Payment) Settle(o ChargeOutcome, now time.Time) error {
	if o.Declined {
		return p.Decline(o.Reason, o.ChargeID, now)
	}
	return p.Capture(o.ChargeID, now)
}

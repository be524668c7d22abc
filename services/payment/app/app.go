// Package app holds the payment context's use cases: charging and refunding
// an order (commands of the payment-processing queue, steps and
// compensations of the order saga) and the query of an order's payments.
package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/services/payment/domain"
)

// paymentStore keeps payments and, in the same transactions, the events
// that announce them (transactional outbox): an answer is published only if
// what it announces is stored, and is never lost once it is.
type paymentStore interface {
	GetOrCreate(ctx context.Context, p *domain.Payment) (*domain.Payment, error)
	// Update stores p, and events with it, if its stored status is still
	// from; false when another delivery moved it first.
	Update(ctx context.Context, p *domain.Payment, from domain.Status, events ...bus.Event) (bool, error)
	// MarkSent records that a charge of p may reach the provider, before
	// it is sent; false when p is settled already.
	MarkSent(ctx context.Context, p *domain.Payment) (pending bool, err error)
	// UpdateUnsent is Update from PENDING of a payment never marked sent.
	UpdateUnsent(ctx context.Context, p *domain.Payment, events ...bus.Event) (bool, error)
	ByOrder(ctx context.Context, orderID string) (*domain.Payment, error)
	// Announce writes events that go with no change: a repeated command's answer.
	Announce(ctx context.Context, events ...bus.Event) error
}

type charger interface {
	Charge(ctx context.Context, p *domain.Payment, token string) (domain.ChargeOutcome, error)
}

type chargeEvents interface {
	// Charged announces a settled payment as payment.completed or payment.failed.
	Charged(p *domain.Payment) (bus.Event, error)
	// Invalid answers a malformed charge with payment.failed.
	Invalid(orderID string, amount domain.Money) bus.Event
}

// Charge is the command to capture an order's amount from a card token.
type Charge struct {
	OrderID    string
	CustomerID string
	Amount     domain.Money
	Token      string
	Saga       string // the order's saga mode; empty for orchestrated
}

// ChargeHandler captures an order's amount through the provider and answers
// with payment.completed or payment.failed.
type ChargeHandler struct {
	store    paymentStore
	provider charger
	events   chargeEvents
	now      func() time.Time
}

func NewChargeHandler(store paymentStore, provider charger, events chargeEvents) ChargeHandler {
	return ChargeHandler{store: store, provider: provider, events: events, now: time.Now}
}

// Handle is idempotent per order id: a repeated command, even delivered
// twice at once, captures at most once and announces the same outcome
// again. A provider that is unavailable makes it return an error wrapping
// domain.ErrProviderUnavailable: the command is to be retried later. But a
// payment whose charge was never sent, met by a provider known to be down
// (domain.ErrProviderDown), fails at once with reason
// domain.ReasonProviderUnavailable: its order is cancelled instead of
// waiting for the provider.
func (h ChargeHandler) Handle(ctx context.Context, cmd Charge) (*domain.Payment, error) {
	p, err := domain.NewPayment(cmd.OrderID, cmd.CustomerID, cmd.Amount, h.now(), domain.InSaga(cmd.Saga))
	if err == nil && cmd.Token == "" {
		err = fmt.Errorf("%w: payment token is required", domain.ErrInvalidCommand)
	}
	if err != nil {
		if cmd.OrderID == "" {
			return nil, err
		}
		// A malformed command still gets an answer, so the saga does not wait.
		return nil, h.store.Announce(ctx, h.events.Invalid(cmd.OrderID, cmd.Amount))
	}
	// The order's payment is created once; a refund that came first left a
	// VOIDED one, which refuses the charge.
	stored, err := h.store.GetOrCreate(ctx, p)
	if err != nil {
		return nil, err
	}
	// The delivery that created the payment is the first to charge it.
	// Any other (a redelivery, a duplicate) may follow a charge that is on
	// its way or was captured: it says so before it sends its own, so that
	// the payment is never failed without the provider's answer.
	first := stored.ID() == p.ID()
	p = stored
	if !p.Settled() && !first {
		pending, err := h.store.MarkSent(ctx, p)
		if err != nil {
			return nil, err
		}
		if !pending {
			p, err = h.store.ByOrder(ctx, p.OrderID())
			if err != nil {
				return nil, err
			}
		}
	}
	if !p.Settled() {
		return h.settle(ctx, p, cmd.Token, first)
	}
	// The outcome is recorded already (a repeated command, or a refund
	// came first): announce it again, with no change to go with.
	ev, err := h.events.Charged(p)
	if err != nil {
		return nil, err
	}
	return p, h.store.Announce(ctx, ev)
}

func (h ChargeHandler) settle(ctx context.Context, p *domain.Payment, token string, first bool) (*domain.Payment, error) {
	// The payment id is the provider's idempotency key: however many
	// deliveries get here, at once or after a crash, it captures once and
	// gives each the same answer.
	outcome, err := h.provider.Charge(ctx, p, token)
	unsent := first && errors.Is(err, domain.ErrProviderDown)
	switch {
	case unsent:
		// Nothing of this payment reached the provider: failing it is
		// safe, and tells the customer now rather than after the retries.
		outcome = domain.ChargeOutcome{Declined: true, Reason: domain.ReasonProviderUnavailable}
	case err != nil:
		// Unavailable or refused (domain.ErrProviderRejected), the command
		// is retried: dropping it would leave the payment PENDING and the
		// saga without an answer, and a refusal is a fault to fix, not a
		// decline to announce.
		return nil, err
	}
	if err := p.Settle(outcome, h.now()); err != nil {
		return nil, err
	}
	ev, err := h.events.Charged(p)
	if err != nil {
		return nil, err
	}
	var ok bool
	if unsent {
		ok, err = h.store.UpdateUnsent(ctx, p, ev)
	} else {
		ok, err = h.store.Update(ctx, p, domain.Pending, ev)
	}
	if err != nil {
		return nil, err
	}
	if ok {
		return p, nil
	}
	// Another delivery settled it first: what it stored stands, and its
	// transaction holds the answer. Or, failing an unsent charge, another
	// delivery has sent one since: it waits for the provider like that one.
	stored, err := h.store.ByOrder(ctx, p.OrderID())
	if err == nil && !stored.Settled() {
		return nil, fmt.Errorf("charge payment %s: another delivery sent a charge: %w", p.ID(), domain.ErrProviderUnavailable)
	}
	return stored, err
}

type refunder interface {
	Refund(ctx context.Context, p *domain.Payment) (refundID string, err error)
}

type refundEvents interface {
	// Refunded announces payment.refunded with what was given back.
	Refunded(p *domain.Payment) bus.Event
}

// RefundHandler gives back what an order paid (the saga's compensation) and
// answers with payment.refunded.
type RefundHandler struct {
	store    paymentStore
	provider refunder
	events   refundEvents
	now      func() time.Time
}

func NewRefundHandler(store paymentStore, provider refunder, events refundEvents) RefundHandler {
	return RefundHandler{store: store, provider: provider, events: events, now: time.Now}
}

// Handle is idempotent per order id: money goes back at most once. A refund
// that comes before the charge voids the order's payment, so the charge,
// when it comes, captures nothing. A charge still in progress makes it
// return an error wrapping domain.ErrChargeInProgress, to be retried later:
// what is not captured yet cannot be refunded, and must not be left behind.
func (h RefundHandler) Handle(ctx context.Context, orderID string) (*domain.Payment, error) {
	if orderID == "" {
		return nil, fmt.Errorf("%w: order id is required", domain.ErrInvalidCommand)
	}
	p, err := h.store.GetOrCreate(ctx, domain.NewVoided(orderID, h.now()))
	if err != nil {
		return nil, err
	}
	switch p.Status() {
	case domain.Pending:
		return nil, fmt.Errorf("refund order %s: %w", orderID, domain.ErrChargeInProgress)
	case domain.Captured:
		return h.refund(ctx, p)
	}
	// Nothing to give back now: REFUNDED announces the amount again;
	// DECLINED and VOIDED (a tombstone found, or just written) announce zero.
	return p, h.store.Announce(ctx, h.events.Refunded(p))
}

func (h RefundHandler) refund(ctx context.Context, p *domain.Payment) (*domain.Payment, error) {
	// "refund-" + payment id is the provider's idempotency key: one refund
	// however often this runs.
	refundID, err := h.provider.Refund(ctx, p)
	if err != nil {
		return nil, err
	}
	if err := p.Refund(refundID, h.now()); err != nil {
		return nil, err
	}
	ok, err := h.store.Update(ctx, p, domain.Captured, h.events.Refunded(p))
	if err != nil {
		return nil, err
	}
	if !ok {
		// Another delivery refunded it first, and its transaction holds the answer.
		return h.store.ByOrder(ctx, p.OrderID())
	}
	return p, nil
}

type paymentLister interface {
	ListByOrder(ctx context.Context, orderID string) ([]*domain.Payment, error)
}

// Viewer is who asks about payments: a customer sees the payments of their
// own orders, an admin sees any.
type Viewer struct {
	CustomerID string
	Admin      bool
}

// OrderPaymentsHandler answers the query "what did this order pay".
type OrderPaymentsHandler struct {
	store paymentLister
}

func NewOrderPaymentsHandler(store paymentLister) OrderPaymentsHandler {
	return OrderPaymentsHandler{store: store}
}

// Handle returns the order's payments that v may see: none, rather than an
// error, for another customer's order, so that nothing leaks.
func (h OrderPaymentsHandler) Handle(ctx context.Context, orderID string, v Viewer) ([]*domain.Payment, error) {
	ps, err := h.store.ListByOrder(ctx, orderID)
	if err != nil {
		return nil, err
	}
	out := make([]*domain.Payment, 0, len(ps))
	for _, p := range ps {
		if v.Admin || (v.CustomerID != "" && p.CustomerID() == v.CustomerID) {
			out = append(out, p)
		}
	}
	return out, nil
}

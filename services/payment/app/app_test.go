package app_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	moneyv1 "github.com/mercato-shop/mercato/api/gen/money/v1"
	paymentv1 "github.com/mercato-shop/mercato/api/gen/payment/v1"
	"github.com/mercato-shop/mercato/external/paysim"
	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/resilience"
	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/platform/storage/storagetest"
	"github.com/mercato-shop/mercato/services/payment/adapters"
	"github.com/mercato-shop/mercato/services/payment/app"
	"github.com/mercato-shop/mercato/services/payment/domain"
	"github.com/mercato-shop/mercato/services/payment/migrations"
)

// published is what a handler announced.
type published struct {
	typ     string // payment.completed, payment.failed, payment.refunded
	orderID string
	reason  string
	amount  domain.Money
}

// recorder stands in for the outbox: it keeps the events the store adds
// (the store's own tests show that they commit with the change).
type recorder struct {
	mu   sync.Mutex
	out  []published
	fail error // what Add returns, when set
}

func (r *recorder) Add(_ context.Context, _ *sql.Tx, events ...bus.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	for _, ev := range events {
		p := published{typ: ev.Type, orderID: ev.Subject}
		var m *moneyv1.Money
		switch d := ev.Data.(type) {
		case *paymentv1.PaymentCompleted:
			m = d.GetAmount()
		case *paymentv1.PaymentFailed:
			m, p.reason = d.GetAmount(), d.GetReason()
		case *paymentv1.PaymentRefunded:
			m = d.GetAmount()
		default:
			return fmt.Errorf("unexpected event %s: %T", ev.Type, ev.Data)
		}
		p.amount = domain.Money{Amount: m.GetAmount(), Currency: m.GetCurrency()}
		r.out = append(r.out, p)
	}
	return nil
}

func (r *recorder) Wake() {}

func (r *recorder) failWith(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail = err
}

func (r *recorder) all() []published {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]published(nil), r.out...)
}

type fixture struct {
	store  *adapters.Store
	sim    *paysim.Simulator
	events *recorder
	charge app.ChargeHandler
	refund app.RefundHandler
}

// setup returns handlers on db calling a simulator; transport, when
// given, carries the provider calls.
func setup(t *testing.T, db *storage.DB, transport ...http.RoundTripper) fixture {
	t.Helper()
	sim := paysim.New(paysim.Config{})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	events := &recorder{}
	store := adapters.NewStore(db, events)
	client := &http.Client{}
	if len(transport) > 0 {
		client.Transport = transport[0]
	}
	provider := adapters.NewProvider(srv.URL, client, 0)
	return fixture{
		store: store, sim: sim, events: events,
		charge: app.NewChargeHandler(store, provider, adapters.Events{}),
		refund: app.NewRefundHandler(store, provider, adapters.Events{}),
	}
}

func chargeCmd(token string) app.Charge {
	return app.Charge{OrderID: uuid.NewString(), CustomerID: "c1", Amount: domain.Money{Amount: 2500, Currency: "EUR"}, Token: token}
}

func TestCharge_ConcurrentDeliveriesCaptureOnce(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		f := setup(t, db)
		cmd := chargeCmd(paysim.TokenOK)
		const n = 8
		got := make([]*domain.Payment, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				var err error
				if got[i], err = f.charge.Handle(context.Background(), cmd); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		for _, p := range got {
			if p.Status() != domain.Captured || p.ID() != got[0].ID() || p.ChargeID() != got[0].ChargeID() {
				t.Fatalf("deliveries disagree: %+v vs %+v", p, got[0])
			}
		}
		if c := f.sim.Captures(); c != 1 {
			t.Fatalf("%d captures, want 1", c)
		}
		announced := f.events.all()
		if len(announced) == 0 {
			t.Fatal("nothing announced")
		}
		for _, e := range announced {
			if e.typ != adapters.EventCompleted || e.orderID != cmd.OrderID || e.amount != cmd.Amount {
				t.Fatalf("announced %+v", e)
			}
		}
	})
}

func TestCharge_DeclineAndUnavailableProvider(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		f := setup(t, db)
		p, err := f.charge.Handle(ctx, chargeCmd(paysim.TokenDecline))
		if err != nil || p.Status() != domain.Declined || p.Reason() != domain.ReasonDeclined {
			t.Fatalf("decline: %+v %v", p, err)
		}

		cmd := chargeCmd(paysim.TokenOK)
		f.sim.SetFailureRate(1)
		if _, err := f.charge.Handle(ctx, cmd); !errors.Is(err, domain.ErrProviderUnavailable) {
			t.Fatalf("provider down: %v, want ErrProviderUnavailable", err)
		}
		if p, err := f.store.ByOrder(ctx, cmd.OrderID); err != nil || p.Status() != domain.Pending {
			t.Fatalf("while the provider is down: %+v %v, want PENDING", p, err)
		}
		if n := len(f.events.all()); n != 1 {
			t.Fatalf("%d announcements, want only the decline", n)
		}
		f.sim.SetFailureRate(0)
		if p, err := f.charge.Handle(ctx, cmd); err != nil || p.Status() != domain.Captured {
			t.Fatalf("retry: %+v %v", p, err)
		}
	})
}

func TestCharge_InvalidCommandsAreAnswered(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		f := setup(t, db)
		for name, mutate := range map[string]func(*app.Charge){
			"no customer":  func(c *app.Charge) { c.CustomerID = "" },
			"zero amount":  func(c *app.Charge) { c.Amount.Amount = 0 },
			"bad currency": func(c *app.Charge) { c.Amount.Currency = "eur" },
			"no token":     func(c *app.Charge) { c.Token = "" },
		} {
			cmd := chargeCmd(paysim.TokenOK)
			mutate(&cmd)
			if _, err := f.charge.Handle(ctx, cmd); err != nil {
				t.Fatalf("%s: %v, want an answer", name, err)
			}
			if _, err := f.store.ByOrder(ctx, cmd.OrderID); !errors.Is(err, domain.ErrNotFound) {
				t.Fatalf("%s: a payment was stored: %v", name, err)
			}
		}
		if n := len(f.events.all()); n != 4 {
			t.Fatalf("%d announcements, want one per invalid command", n)
		}
		for _, e := range f.events.all() {
			if e.typ != adapters.EventFailed || e.reason != domain.ReasonInvalid {
				t.Fatalf("announced %+v", e)
			}
		}
		noOrder := chargeCmd(paysim.TokenOK)
		noOrder.OrderID = ""
		if _, err := f.charge.Handle(ctx, noOrder); !errors.Is(err, domain.ErrInvalidCommand) {
			t.Fatalf("no order id: %v, want ErrInvalidCommand", err)
		}
		if _, err := f.refund.Handle(ctx, ""); !errors.Is(err, domain.ErrInvalidCommand) {
			t.Fatalf("refund without order id: %v", err)
		}
		if c := f.sim.Captures(); c != 0 {
			t.Fatalf("%d captures, want 0", c)
		}
	})
}

func TestRefund_WaitsForTheChargeThenRefundsOnce(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		f := setup(t, db)
		cmd := chargeCmd(paysim.TokenOK)

		// A charge stuck on the provider leaves the payment PENDING.
		f.sim.SetFailureRate(1)
		if _, err := f.charge.Handle(ctx, cmd); err == nil {
			t.Fatal("charge succeeded with the provider down")
		}
		f.sim.SetFailureRate(0)
		if _, err := f.refund.Handle(ctx, cmd.OrderID); !errors.Is(err, domain.ErrChargeInProgress) {
			t.Fatalf("refund of a pending charge: %v, want ErrChargeInProgress", err)
		}

		if _, err := f.charge.Handle(ctx, cmd); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			p, err := f.refund.Handle(ctx, cmd.OrderID)
			if err != nil || p.Status() != domain.Refunded {
				t.Fatalf("refund: %+v %v", p, err)
			}
		}
		if n := f.sim.Refunds(); n != 1 {
			t.Fatalf("%d provider refunds, want 1", n)
		}
		// A late copy of the charge announces its outcome again and captures nothing.
		if p, err := f.charge.Handle(ctx, cmd); err != nil || p.Status() != domain.Refunded || f.sim.Captures() != 1 {
			t.Fatalf("late charge: %+v %v, %d captures", p, err, f.sim.Captures())
		}
		var refunds []published
		for _, e := range f.events.all() {
			if e.typ == adapters.EventRefunded {
				refunds = append(refunds, e)
			}
		}
		if len(refunds) != 2 || refunds[0].amount != cmd.Amount || refunds[1].amount != cmd.Amount {
			t.Fatalf("refund announcements %+v, want the amount twice", refunds)
		}
	})
}

func TestRefund_BeforeChargeVoidsThePayment(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		f := setup(t, db)
		cmd := chargeCmd(paysim.TokenOK)
		p, err := f.refund.Handle(ctx, cmd.OrderID)
		if err != nil || p.Status() != domain.Voided || p.RefundedAmount().Amount != 0 {
			t.Fatalf("refund first: %+v %v", p, err)
		}
		p, err = f.charge.Handle(ctx, cmd)
		if err != nil || p.Status() != domain.Voided || p.Reason() != domain.ReasonVoided {
			t.Fatalf("late charge: %+v %v", p, err)
		}
		if c := f.sim.Captures(); c != 0 {
			t.Fatalf("%d captures, want 0", c)
		}

		declined := chargeCmd(paysim.TokenDecline)
		if _, err := f.charge.Handle(ctx, declined); err != nil {
			t.Fatal(err)
		}
		if p, err := f.refund.Handle(ctx, declined.OrderID); err != nil || p.Status() != domain.Declined || p.RefundedAmount().Amount != 0 {
			t.Fatalf("refund of a declined payment: %+v %v", p, err)
		}
		if n := f.sim.Refunds(); n != 0 {
			t.Fatalf("%d provider refunds, want 0", n)
		}
	})
}

func TestHandlers_StoreNoOutcomeWithoutItsAnswer(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		f := setup(t, db)
		cmd := chargeCmd(paysim.TokenOK)
		errOutbox := errors.New("outbox unavailable")

		// The provider captures, but the answer cannot be written: the
		// capture is not stored either, and the command is retried.
		f.events.failWith(errOutbox)
		if _, err := f.charge.Handle(ctx, cmd); !errors.Is(err, errOutbox) {
			t.Fatalf("charge: %v, want the outbox's error", err)
		}
		if p, err := f.store.ByOrder(ctx, cmd.OrderID); err != nil || p.Status() != domain.Pending {
			t.Fatalf("after the failed commit: %+v %v, want PENDING", p, err)
		}
		f.events.failWith(nil)
		if p, err := f.charge.Handle(ctx, cmd); err != nil || p.Status() != domain.Captured {
			t.Fatalf("retried charge: %+v %v", p, err)
		}

		f.events.failWith(errOutbox)
		if _, err := f.refund.Handle(ctx, cmd.OrderID); !errors.Is(err, errOutbox) {
			t.Fatalf("refund: %v, want the outbox's error", err)
		}
		if p, err := f.store.ByOrder(ctx, cmd.OrderID); err != nil || p.Status() != domain.Captured {
			t.Fatalf("after the failed commit: %+v %v, want CAPTURED", p, err)
		}
		f.events.failWith(nil)
		if p, err := f.refund.Handle(ctx, cmd.OrderID); err != nil || p.Status() != domain.Refunded {
			t.Fatalf("retried refund: %+v %v", p, err)
		}

		// The provider's idempotency keys made the retries safe.
		if c, r := f.sim.Captures(), f.sim.Refunds(); c != 1 || r != 1 {
			t.Fatalf("%d captures and %d refunds, want 1 and 1", c, r)
		}
		var types []string
		for _, e := range f.events.all() {
			types = append(types, e.typ)
		}
		if want := []string{adapters.EventCompleted, adapters.EventRefunded}; !slices.Equal(types, want) {
			t.Fatalf("announced %v, want %v", types, want)
		}
	})
}

// policies open the provider's breaker on its first failure and keep it
// open briefly: no retries, so each charge is one attempt.
const policies = `
defaults:
  timeout: 2s
  retry: {max_attempts: 1, backoff: {initial: 10ms, max: 10ms}, jitter: 0}
  circuit_breaker: {failure_threshold: 1, delay: 200ms, success_threshold: 1}
  bulkhead: {max_concurrent: 8, max_wait: 100ms}
`

func TestCharge_ProviderDownFailsUnsentChargesAndWaitsForSentOnes(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		guard, err := resilience.Load([]byte(policies), nil)
		if err != nil {
			t.Fatal(err)
		}
		f := setup(t, db, guard.Transport("payment-provider", nil))
		attempts := func() uint64 { return guard.Breakers()[0].Counts.Attempts }

		// A charge sent to a failing provider opens the breaker and waits:
		// the provider might have captured it.
		f.sim.SetFailureRate(1)
		sent := chargeCmd(paysim.TokenOK)
		if _, err := f.charge.Handle(ctx, sent); !errors.Is(err, domain.ErrProviderUnavailable) || errors.Is(err, domain.ErrProviderDown) {
			t.Fatalf("first failure: %v, want ErrProviderUnavailable alone", err)
		}
		if st := guard.Breakers()[0].State; st != "open" {
			t.Fatalf("breaker %s after the failure, want open", st)
		}

		// A new charge meets the open breaker: never sent, so it fails at
		// once, with a reason the order can tell the customer.
		before := attempts()
		unsent := chargeCmd(paysim.TokenOK)
		p, err := f.charge.Handle(ctx, unsent)
		if err != nil || p.Status() != domain.Declined || p.Reason() != domain.ReasonProviderUnavailable {
			t.Fatalf("charge while open: %+v %v, want DECLINED provider_unavailable", p, err)
		}
		if got := attempts(); got != before {
			t.Fatalf("%d attempts reached the provider while the breaker was open", got-before)
		}
		want := published{typ: "payment.failed", orderID: unsent.OrderID, reason: domain.ReasonProviderUnavailable, amount: unsent.Amount}
		if evs := f.events.all(); len(evs) != 1 || evs[0] != want {
			t.Fatalf("announced %+v, want %+v", evs, want)
		}

		// The sent one, redelivered while open, keeps waiting.
		if _, err := f.charge.Handle(ctx, sent); !errors.Is(err, domain.ErrProviderDown) {
			t.Fatalf("redelivery while open: %v, want ErrProviderDown", err)
		}
		if p, err := f.store.ByOrder(ctx, sent.OrderID); err != nil || p.Status() != domain.Pending {
			t.Fatalf("sent charge while open: %+v %v, want PENDING", p, err)
		}

		// The fault clears; once the breaker lets a probe through, the
		// waiting charge captures, once.
		f.sim.SetFailureRate(0)
		deadline := time.Now().Add(10 * time.Second)
		for {
			p, err := f.charge.Handle(ctx, sent)
			if err == nil && p.Status() == domain.Captured {
				break
			}
			if !errors.Is(err, domain.ErrProviderDown) || time.Now().After(deadline) {
				t.Fatalf("after the fault cleared: %+v %v", p, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if st := guard.Breakers()[0].State; st != "closed" {
			t.Fatalf("breaker %s after the probe, want closed", st)
		}
		if n := f.sim.Captures(); n != 1 {
			t.Fatalf("%d captures, want 1", n)
		}
		// The failed one stays failed: a redelivery announces it again.
		if p, err := f.charge.Handle(ctx, unsent); err != nil || p.Status() != domain.Declined {
			t.Fatalf("failed charge redelivered: %+v %v", p, err)
		}
	})
}

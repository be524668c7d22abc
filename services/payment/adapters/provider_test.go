package adapters_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mercato-shop/mercato/external/paysim"
	"github.com/mercato-shop/mercato/platform/resilience"
	"github.com/mercato-shop/mercato/services/payment/adapters"
	"github.com/mercato-shop/mercato/services/payment/domain"
)

func provider(t *testing.T, timeout time.Duration) (*adapters.Provider, *paysim.Simulator, string) {
	t.Helper()
	sim := paysim.New(paysim.Config{})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return adapters.NewProvider(srv.URL+"/", &http.Client{}, timeout), sim, srv.URL
}

// providerCharge reads a charge the way the provider stores it.
func providerCharge(t *testing.T, base, id string) map[string]any {
	t.Helper()
	resp, err := http.Get(base + "/v1/charges/" + id)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ch map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&ch); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("charge %s: %d %v", id, resp.StatusCode, err)
	}
	return ch
}

func TestProvider_CapturesOnceAcrossRetries(t *testing.T) {
	p, sim, base := provider(t, 0)
	ctx := context.Background()
	pay := newPayment(t, uuid.NewString(), 123456789)

	first, err := p.Charge(ctx, pay, paysim.TokenOK)
	if err != nil || first.Declined || !strings.HasPrefix(first.ChargeID, "ch_") {
		t.Fatalf("charge: %+v %v", first, err)
	}
	// The provider saw its own model: a decimal amount and a lower-case currency.
	ch := providerCharge(t, base, first.ChargeID)
	if ch["amount"] != "1234567.89" || ch["currency"] != "eur" || ch["description"] != "mercato order "+pay.OrderID() {
		t.Fatalf("provider's charge: %v", ch)
	}
	// A retry (a redelivered command, another instance) sends the same key.
	again, err := adapters.NewProvider(base, &http.Client{}, 0).Charge(ctx, pay, paysim.TokenOK)
	if err != nil || again != first {
		t.Fatalf("retry: %+v %v, want %+v", again, err, first)
	}
	if n := sim.Captures(); n != 1 {
		t.Fatalf("%d captures, want 1", n)
	}
	// The same payment sent with another card is refused by the provider's
	// key check; it must not read as a decline of a payment that captured.
	if out, err := p.Charge(ctx, pay, paysim.TokenDecline); !errors.Is(err, domain.ErrProviderRejected) {
		t.Fatalf("same key, other card: %+v %v, want ErrProviderRejected", out, err)
	}
}

func TestProvider_TranslatesDeclines(t *testing.T) {
	p, sim, base := provider(t, 0)
	ctx := context.Background()
	out, err := p.Charge(ctx, newPayment(t, uuid.NewString(), 1000), paysim.TokenDecline)
	if err != nil || !out.Declined || out.Reason != domain.ReasonDeclined || !strings.HasPrefix(out.ChargeID, "ch_") {
		t.Fatalf("decline: %+v %v", out, err)
	}
	if ch := providerCharge(t, base, out.ChargeID); ch["status"] != "failed" {
		t.Fatalf("declined charge: %v", ch)
	}
	out, err = p.Charge(ctx, newPayment(t, uuid.NewString(), 1000), "tok_unknown")
	if err != nil || !out.Declined || out.Reason != domain.ReasonDeclined {
		t.Fatalf("unknown token: %+v %v", out, err)
	}
	if n := sim.Captures(); n != 0 {
		t.Fatalf("%d captures, want 0", n)
	}
}

func TestProvider_TransientFailuresAreErrors(t *testing.T) {
	p, sim, _ := provider(t, 100*time.Millisecond)
	ctx := context.Background()
	pay := newPayment(t, uuid.NewString(), 500)

	if _, err := p.Charge(ctx, pay, paysim.TokenError); !errors.Is(err, domain.ErrProviderUnavailable) {
		t.Fatalf("provider error: %v, want ErrProviderUnavailable", err)
	}

	sim.SetFailureRate(1)
	if _, err := p.Charge(ctx, pay, paysim.TokenOK); !errors.Is(err, domain.ErrProviderUnavailable) {
		t.Fatalf("failing provider: %v, want ErrProviderUnavailable", err)
	}
	sim.SetFailureRate(0)

	sim.SetLatency(time.Hour)
	_, err := p.Charge(ctx, pay, paysim.TokenOK)
	if !errors.Is(err, domain.ErrProviderUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow provider: %v, want ErrProviderUnavailable after the call timeout", err)
	}
	sim.SetLatency(0)

	out, err := p.Charge(ctx, pay, paysim.TokenOK)
	if err != nil || out.Declined {
		t.Fatalf("once the provider is back: %+v %v", out, err)
	}
	if n := sim.Captures(); n != 1 {
		t.Fatalf("%d captures, want 1", n)
	}

	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	down := adapters.NewProvider(gone.URL, &http.Client{}, time.Second)
	if _, err := down.Charge(ctx, pay, paysim.TokenOK); !errors.Is(err, domain.ErrProviderUnavailable) {
		t.Fatalf("unreachable provider: %v, want ErrProviderUnavailable", err)
	}
}

func TestProvider_RefundsOnce(t *testing.T) {
	p, sim, base := provider(t, 0)
	ctx := context.Background()
	pay := newPayment(t, uuid.NewString(), 1234)
	out, err := p.Charge(ctx, pay, paysim.TokenOK)
	if err != nil {
		t.Fatal(err)
	}
	if err := pay.Settle(out, time.Now()); err != nil {
		t.Fatal(err)
	}

	sim.SetFailureRate(1)
	if _, err := p.Refund(ctx, pay); !errors.Is(err, domain.ErrProviderUnavailable) {
		t.Fatalf("failing provider: %v", err)
	}
	sim.SetFailureRate(0)

	first, err := p.Refund(ctx, pay)
	if err != nil || !strings.HasPrefix(first, "re_") {
		t.Fatalf("refund: %q %v", first, err)
	}
	again, err := p.Refund(ctx, pay)
	if err != nil || again != first {
		t.Fatalf("retried refund: %q %v, want %q", again, err, first)
	}
	if n := sim.Refunds(); n != 1 {
		t.Fatalf("%d refunds, want 1", n)
	}
	if ch := providerCharge(t, base, out.ChargeID); ch["amount_refunded"] != "12.34" {
		t.Fatalf("charge after refund: %v", ch)
	}

	// A charge the provider does not know is a refusal, not a transient error.
	lost := domain.Restore(uuid.NewString(), uuid.NewString(), "c1", domain.Money{Amount: 100, Currency: "EUR"},
		domain.Captured, "", "ch_lost", "", time.Now(), time.Now())
	if _, err := p.Refund(ctx, lost); !errors.Is(err, domain.ErrProviderRejected) {
		t.Fatalf("unknown charge: %v, want ErrProviderRejected", err)
	}
}

func TestProvider_RefusesUnsupportedMoneyWithoutACall(t *testing.T) {
	p, sim, _ := provider(t, 0)
	yen := domain.Restore(uuid.NewString(), uuid.NewString(), "c1", domain.Money{Amount: 100, Currency: "JPY"},
		domain.Pending, "", "", "", time.Now(), time.Now())
	if _, err := p.Charge(context.Background(), yen, paysim.TokenOK); !errors.Is(err, domain.ErrUnsupportedCurrency) {
		t.Fatalf("JPY: %v", err)
	}
	if n := sim.Captures(); n != 0 {
		t.Fatalf("%d captures, want 0", n)
	}
}

// guarded returns a provider whose calls go through the payment-provider
// policies of yaml, to a simulator behind front (which may tamper with
// what passes), and the policies.
func guarded(t *testing.T, yaml string, front func(sim http.Handler) http.Handler) (*adapters.Provider, *paysim.Simulator, *resilience.Policies) {
	t.Helper()
	guard, err := resilience.Load([]byte(yaml), nil)
	if err != nil {
		t.Fatal(err)
	}
	sim := paysim.New(paysim.Config{})
	srv := httptest.NewServer(front(sim))
	t.Cleanup(srv.Close)
	client := &http.Client{Transport: guard.Transport("payment-provider", nil)}
	return adapters.NewProvider(srv.URL, client, 0), sim, guard
}

const retrying = `
defaults:
  timeout: 2s
  retry: {max_attempts: 3, backoff: {initial: 100ms, max: 100ms}, jitter: 0}
  circuit_breaker: {failure_threshold: 100, delay: 1m, success_threshold: 1}
  bulkhead: {max_concurrent: 8, max_wait: 100ms}
`

// A charge whose answer is lost is retried with its idempotency key: the
// retry gets the first capture's answer, and nothing is captured twice.
func TestProvider_RetryAfterALostAnswerCapturesOnce(t *testing.T) {
	var (
		mu   sync.Mutex
		keys []string
	)
	p, sim, _ := guarded(t, retrying, func(sim http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			keys = append(keys, r.Header.Get(paysim.IdempotencyHeader))
			first := len(keys) == 1
			mu.Unlock()
			if first {
				sim.ServeHTTP(httptest.NewRecorder(), r) // captured, answer lost
				w.WriteHeader(http.StatusBadGateway)
				return
			}
			sim.ServeHTTP(w, r)
		})
	})
	pay := newPayment(t, uuid.NewString(), 2500)
	out, err := p.Charge(context.Background(), pay, paysim.TokenOK)
	if err != nil || out.Declined || out.ChargeID == "" {
		t.Fatalf("charge: %+v %v", out, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(keys) != 2 || keys[0] != pay.ID() || keys[1] != pay.ID() {
		t.Fatalf("attempts with keys %q, want two with %q", keys, pay.ID())
	}
	if n := sim.Captures(); n != 1 {
		t.Fatalf("%d captures, want 1", n)
	}
}

// A retry that would outlive the caller's deadline is not sent.
func TestProvider_RetriesKeepTheCallersDeadline(t *testing.T) {
	var sent atomic.Int32
	p, sim, guard := guarded(t, retrying, func(sim http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { sent.Add(1); sim.ServeHTTP(w, r) })
	})
	sim.SetFailureRate(1)
	// The backoff before a retry is 100ms; the caller has 50ms.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := p.Charge(ctx, newPayment(t, uuid.NewString(), 2500), paysim.TokenOK); !errors.Is(err, domain.ErrProviderUnavailable) {
		t.Fatalf("charge: %v, want ErrProviderUnavailable", err)
	}
	if b := guard.Breakers()[0]; sent.Load() != 1 || b.Counts.Retries != 0 || b.Counts.RetriesSkipped != 1 {
		t.Fatalf("%d attempts, counts %+v; want 1 attempt and the retry skipped", sent.Load(), b.Counts)
	}
}

// ErrProviderDown means that nothing was sent: a call whose first attempt
// reached the provider is only unavailable, even when the breaker opened
// before its retry.
func TestProvider_DownOnlyWhenNothingWasSent(t *testing.T) {
	p, sim, guard := guarded(t, strings.Replace(retrying, "failure_threshold: 100", "failure_threshold: 1", 1),
		func(sim http.Handler) http.Handler { return sim })
	sim.SetFailureRate(1)
	ctx := context.Background()
	_, err := p.Charge(ctx, newPayment(t, uuid.NewString(), 2500), paysim.TokenOK)
	if !errors.Is(err, domain.ErrProviderUnavailable) || errors.Is(err, domain.ErrProviderDown) || !errors.Is(err, resilience.ErrOpen) {
		t.Fatalf("sent, then open: %v; want unavailable, breaker open, not down", err)
	}
	_, err = p.Charge(ctx, newPayment(t, uuid.NewString(), 2500), paysim.TokenOK)
	if !errors.Is(err, domain.ErrProviderDown) || !errors.Is(err, domain.ErrProviderUnavailable) {
		t.Fatalf("open: %v, want ErrProviderDown", err)
	}
	if b := guard.Breakers()[0]; b.Counts.Attempts != 1 || b.Counts.RejectedOpen != 2 {
		t.Fatalf("counts %+v: want 1 attempt, 2 rejected", b.Counts)
	}
}

package adapters_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mercato-shop/mercato/external/paysim"
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

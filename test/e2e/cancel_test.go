package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/mercato-shop/mercato/shop"
)

// The customer cancels: a confirmed order is refunded and its stock
// released, then CANCELLED customer_cancelled; cancelling again is harmless.
func TestShop_CancelRefundsAndReleases(t *testing.T) {
	s, c := startShop(t, t.TempDir())
	t.Cleanup(func() { stopShop(t, s) })
	ann, bob := c.signUp("Ann"), c.signUp("Bob")
	mug := c.catalog()["MUG-001"]

	_, o := c.placeOrder(ann, mug.ID, 3, "tok_ok")
	if got := c.settle(ann, o.ID); got.Status != "CONFIRMED" {
		t.Fatalf("order %+v", got)
	}
	c.expectProblem(c.do("POST", "/api/orders/"+o.ID+"/cancel", bob, nil), http.StatusNotFound, "another customer's cancel")
	if r := c.do("POST", "/api/orders/"+o.ID+"/cancel", ann, nil); r.status != http.StatusAccepted {
		t.Fatalf("cancel: %d %s", r.status, r.body)
	}
	got := c.waitStatus(ann, o.ID, "CANCELLED")
	if got.Reason != "customer_cancelled" {
		t.Fatalf("cancelled order %+v", got)
	}
	if ps := c.payments(ann, o.ID); len(ps) != 1 || ps[0].Status != "REFUNDED" {
		t.Fatalf("payments after cancel: %+v", ps)
	}
	if got := c.catalog()["MUG-001"].Available; got != mug.Available {
		t.Fatalf("stock after cancel %d, want %d", got, mug.Available)
	}
	if r := c.do("POST", "/api/orders/"+o.ID+"/cancel", ann, nil); r.status != http.StatusAccepted {
		t.Fatalf("cancel twice: %d %s", r.status, r.body)
	}
	if n := s.Provider().Refunds(); n != 1 {
		t.Fatalf("%d refunds, want 1", n)
	}
	if got := c.catalog()["MUG-001"].Available; got != mug.Available {
		t.Fatalf("stock after a second cancel %d, want %d", got, mug.Available)
	}
}

// The provider hangs: the charge step times out, the order is CANCELLED with
// reason timeout and its stock released; the provider's late success is
// refunded, so nothing stays charged.
func TestShop_StepTimeoutCompensatesAndRefundsALateCapture(t *testing.T) {
	s, c := startShop(t, t.TempDir(), func(cfg *shop.Config) {
		cfg.StepTimeout = 500 * time.Millisecond
		cfg.SagaRetry = 200 * time.Millisecond
	})
	t.Cleanup(func() { stopShop(t, s) })
	ann := c.signUp("Ann")
	mug := c.catalog()["MUG-001"]

	s.Provider().SetLatency(2 * time.Second) // slower than the step, faster than payment's provider timeout
	_, o := c.placeOrder(ann, mug.ID, 1, "tok_ok")
	got := c.waitStatus(ann, o.ID, "CANCELLED")
	if got.Reason != "timeout" {
		t.Fatalf("timed out order %+v", got)
	}
	if got := c.catalog()["MUG-001"].Available; got != mug.Available {
		t.Fatalf("stock after the timeout %d, want %d", got, mug.Available)
	}
	if ps := c.payments(ann, o.ID); len(ps) != 1 || ps[0].Status != "REFUNDED" {
		t.Fatalf("the late capture was not refunded: %+v", ps)
	}
	if s.Provider().Captures() != 1 || s.Provider().Refunds() != 1 {
		t.Fatalf("captures %d refunds %d, want 1 and 1", s.Provider().Captures(), s.Provider().Refunds())
	}
}

// waitStatus polls the order until it has status.
func (c client) waitStatus(tok, id, status string) orderJSON {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var o orderJSON
		c.do("GET", "/api/orders/"+id, tok, nil).json(c.t, &o)
		if o.Status == status {
			return o
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("order %s is %s, not %s", id, o.Status, status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

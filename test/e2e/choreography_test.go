package e2e

import (
	"net/http"
	"testing"
	"time"
)

func (c client) placeChoreographed(tok, productID string, qty int, payToken string) orderJSON {
	c.t.Helper()
	r := c.do("POST", "/api/orders", tok, map[string]any{
		"items":   []map[string]any{{"product_id": productID, "quantity": qty}},
		"saga":    "choreographed",
		"payment": map[string]string{"token": payToken},
	})
	if r.status != http.StatusAccepted {
		c.t.Fatalf("place choreographed: %d %s", r.status, r.body)
	}
	var o orderJSON
	r.json(c.t, &o)
	if o.Saga != "choreographed" {
		c.t.Fatalf("saga %q", o.Saga)
	}
	return o
}

// The choreographed saga: the same outcomes, reasons and invariants as the
// orchestrated one, with services reacting to each other's events.
func TestShop_ChoreographedSaga(t *testing.T) {
	s, c := startShop(t, t.TempDir())
	t.Cleanup(func() { stopShop(t, s) })
	ann := c.signUp("Ann")
	before := c.catalog()
	mug, kbd := before["MUG-001"], before["KBD-001"]

	// Paid: CONFIRMED, one capture, stock taken once.
	o := c.placeChoreographed(ann, mug.ID, 2, "tok_ok")
	if got := c.settle(ann, o.ID); got.Status != "CONFIRMED" {
		t.Fatalf("tok_ok: %+v", got)
	}
	if ps := c.payments(ann, o.ID); len(ps) != 1 || ps[0].Status != "CAPTURED" {
		t.Fatalf("payments: %+v", ps)
	}
	if got := c.catalog()["MUG-001"].Available; got != mug.Available-2 {
		t.Fatalf("stock %d, want %d", got, mug.Available-2)
	}

	// Declined: CANCELLED payment_declined, no stock taken.
	d := c.placeChoreographed(ann, mug.ID, 1, "tok_decline")
	if got := c.settle(ann, d.ID); got.Status != "CANCELLED" || got.Reason != "payment_declined" {
		t.Fatalf("tok_decline: %+v", got)
	}
	if got := c.catalog()["MUG-001"].Available; got != mug.Available-2 {
		t.Fatalf("stock after a decline %d, want %d", got, mug.Available-2)
	}

	// Out of stock after payment: two orders for the last keyboards are both
	// charged (the provider is slow, so neither has reserved when the second
	// is placed); inventory serves one, the other is refunded and cancelled.
	s.Provider().SetLatency(300 * time.Millisecond)
	first := c.placeChoreographed(ann, kbd.ID, int(kbd.Available), "tok_ok")
	second := c.placeChoreographed(ann, kbd.ID, int(kbd.Available), "tok_ok")
	a, b := c.settle(ann, first.ID), c.settle(ann, second.ID)
	s.Provider().SetLatency(0)
	if a.Status == b.Status {
		t.Fatalf("both keyboard orders ended %s", a.Status)
	}
	lost := a
	if a.Status == "CONFIRMED" {
		lost = b
	}
	if lost.Status != "CANCELLED" || lost.Reason != "out_of_stock" {
		t.Fatalf("the order that found no stock: %+v", lost)
	}
	if ps := c.payments(ann, lost.ID); len(ps) != 1 || ps[0].Status != "REFUNDED" {
		t.Fatalf("its payment: %+v", ps)
	}
	if got := c.catalog()["KBD-001"].Available; got != 0 {
		t.Fatalf("keyboards left %d", got)
	}

	// Cancel a confirmed choreographed order: refunded and restocked.
	if r := c.do("POST", "/api/orders/"+o.ID+"/cancel", ann, nil); r.status != http.StatusAccepted {
		t.Fatalf("cancel: %d %s", r.status, r.body)
	}
	if got := c.waitStatus(ann, o.ID, "CANCELLED"); got.Reason != "customer_cancelled" {
		t.Fatalf("cancelled: %+v", got)
	}
	if ps := c.payments(ann, o.ID); len(ps) != 1 || ps[0].Status != "REFUNDED" {
		t.Fatalf("payments after cancel: %+v", ps)
	}
	if got := c.catalog()["MUG-001"].Available; got != mug.Available {
		t.Fatalf("stock after cancel %d, want %d", got, mug.Available)
	}
	if n := s.Provider().Captures(); n != 3 {
		t.Fatalf("%d captures, want 3 (mug, two keyboard orders)", n)
	}
}

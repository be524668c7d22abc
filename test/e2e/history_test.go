package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

type meJSON struct {
	ID           string `json:"id"`
	RecentOrders []struct {
		ID     string `json:"id"`
		Status string `json:"status"`
		Reason string `json:"reason"`
		Total  struct {
			Amount   int64  `json:"amount"`
			Currency string `json:"currency"`
		} `json:"total"`
		ItemCount int64     `json:"item_count"`
		CreatedAt time.Time `json:"created_at"`
		UpdatedAt time.Time `json:"updated_at"`
	} `json:"recent_orders"`
}

// recentOrders renders the caller's recent_orders as
// "id status reason amount currency items", newest first.
func (c client) recentOrders(tok string) []string {
	c.t.Helper()
	r := c.do("GET", "/api/customers/me", tok, nil)
	if r.status != http.StatusOK {
		c.t.Fatalf("GET /api/customers/me: %d %s", r.status, r.body)
	}
	var me meJSON
	r.json(c.t, &me)
	if me.RecentOrders == nil {
		c.t.Fatalf("recent_orders missing or null: %s", r.body)
	}
	out := make([]string, len(me.RecentOrders))
	for i, o := range me.RecentOrders {
		if o.CreatedAt.IsZero() || o.UpdatedAt.Before(o.CreatedAt) {
			c.t.Fatalf("order %s times: %s", o.ID, r.body)
		}
		out[i] = fmt.Sprintf("%s %s %s %d %s %d", o.ID, o.Status, o.Reason, o.Total.Amount, o.Total.Currency, o.ItemCount)
	}
	return out
}

// waitRecentOrders polls GET /api/customers/me until its recent_orders are want.
func (c client) waitRecentOrders(tok string, want []string) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := c.recentOrders(tok)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("recent_orders\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The customer service keeps each customer's order history from the order
// events: GET /api/customers/me lists the five latest orders placed through
// the gateway, newest first, each with its final status, in both saga modes.
func TestShop_CustomerSeesRecentOrdersWithTheirFinalStatus(t *testing.T) {
	s, c := startShop(t, t.TempDir())
	t.Cleanup(func() { stopShop(t, s) })
	ann, bob := c.signUp("Ann"), c.signUp("Bob")
	if r := c.do("GET", "/api/customers/me", ann, nil); !strings.Contains(string(r.body), `"recent_orders":[]`) {
		t.Fatalf("before any order: %d %s", r.status, r.body)
	}
	mug := c.catalog()["MUG-001"]
	line := func(o orderJSON, status, reason string, qty int64) string {
		return fmt.Sprintf("%s %s %s %d EUR %d", o.ID, status, reason, qty*mug.Price.Amount, qty)
	}

	// Placed one after the other, oldest first.
	_, oldest := c.placeOrder(ann, mug.ID, 1, "tok_ok")
	c.waitStatus(ann, oldest.ID, "CONFIRMED")
	_, paid := c.placeOrder(ann, mug.ID, 2, "tok_ok")
	c.waitStatus(ann, paid.ID, "CONFIRMED")
	_, declined := c.placeOrder(ann, mug.ID, 1, "tok_decline")
	c.waitStatus(ann, declined.ID, "CANCELLED")
	choreographed := c.placeChoreographed(ann, mug.ID, 3, "tok_ok")
	c.waitStatus(ann, choreographed.ID, "CONFIRMED")
	_, withdrawn := c.placeOrder(ann, mug.ID, 4, "tok_ok")
	c.waitStatus(ann, withdrawn.ID, "CONFIRMED")
	if r := c.do("POST", "/api/orders/"+withdrawn.ID+"/cancel", ann, nil); r.status != http.StatusAccepted {
		t.Fatalf("cancel: %d %s", r.status, r.body)
	}
	c.waitStatus(ann, withdrawn.ID, "CANCELLED")
	_, newest := c.placeOrder(ann, mug.ID, 2, "tok_ok")
	c.waitStatus(ann, newest.ID, "CONFIRMED")
	_, bobs := c.placeOrder(bob, mug.ID, 1, "tok_ok")
	c.waitStatus(bob, bobs.ID, "CONFIRMED")

	// Five of six, the oldest left out.
	c.waitRecentOrders(ann, []string{
		line(newest, "CONFIRMED", "", 2),
		line(withdrawn, "CANCELLED", "customer_cancelled", 4),
		line(choreographed, "CONFIRMED", "", 3),
		line(declined, "CANCELLED", "payment_declined", 1),
		line(paid, "CONFIRMED", "", 2),
	})
	c.waitRecentOrders(bob, []string{line(bobs, "CONFIRMED", "", 1)})
}

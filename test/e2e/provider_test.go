package e2e

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mercato-shop/mercato/deploy"
	"github.com/mercato-shop/mercato/shop"
)

// only returns the one instance of service.
func (c client) only(admin, service string) string {
	c.t.Helper()
	ids := c.instances(admin, service)
	if len(ids) != 1 {
		c.t.Fatalf("%d instances of %s, want 1", len(ids), service)
	}
	for id := range ids {
		return id
	}
	return ""
}

// setChaos sets an instance's fault switches through the gateway.
func (c client) setChaos(admin, service, id string, switches map[string]any) {
	c.t.Helper()
	if r := c.do("PUT", "/admin/chaos/"+service+"/"+id, admin, switches); r.status != http.StatusOK {
		c.t.Fatalf("chaos %s %s: %d %s", service, id, r.status, r.body)
	}
}

// A provider failing every charge: payment's breaker for it opens after its
// threshold; orders then cancel at once with a clear reason, without a call
// reaching the provider, while those whose charges were sent wait; once the
// fault clears, the half-open probes close the breaker and orders confirm.
func TestShop_ProviderBreakerCancelsOrdersAndRecovers(t *testing.T) {
	policies := strings.Replace(string(deploy.Resilience()), "delay: 15s", "delay: 4s", 1)
	if policies == string(deploy.Resilience()) {
		t.Fatal("the shipped policy file has no provider breaker delay of 15s to shorten")
	}
	s, c := startShop(t, t.TempDir(), func(cfg *shop.Config) {
		cfg.Resilience = []byte(policies)
		cfg.PaymentBackoff = []time.Duration{200 * time.Millisecond}
		cfg.StepTimeout = 5 * time.Minute // no order may end by the saga's timeout
	})
	t.Cleanup(func() { stopShop(t, s) })
	admin, ann := c.admin(), c.signUp("Ann")
	mug := c.catalog()["MUG-001"]
	breakers := "/admin/breakers/payment/" + c.only(admin, "payment")
	provider := c.breakerAt(admin, breakers, "payment-provider")
	if provider.State != "closed" {
		t.Fatalf("provider breaker %+v before any fault", provider)
	}

	// The provider fails every charge, switched through the admin API.
	paysim := c.only(admin, shop.ProviderService)
	c.setChaos(admin, shop.ProviderService, paysim, map[string]any{"error_rate": 1})
	// The breaker opens when half of at least 10 calls in 30s failed: four
	// charges of three attempts each make 12.
	var waiting []string
	for range 4 {
		_, o := c.placeOrder(ann, mug.ID, 1, "tok_ok")
		waiting = append(waiting, o.ID)
	}
	deadline := time.Now().Add(20 * time.Second)
	for provider = c.breakerAt(admin, breakers, "payment-provider"); provider.State != "open"; provider = c.breakerAt(admin, breakers, "payment-provider") {
		if time.Now().After(deadline) {
			t.Fatalf("provider breaker %+v after 4 failing charges", provider)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if provider.Counts.Attempts < 10 || provider.Counts.Opened != 1 {
		t.Fatalf("breaker opened after %d attempts (%+v), want at least 10", provider.Counts.Attempts, provider.Counts)
	}
	// The state is in the instance's metrics too, read through the gateway.
	metrics := c.do("GET", strings.Replace(breakers, "breakers", "metrics", 1), admin, nil)
	if line := `mercato_circuit_breaker_state{state="open",target="payment-provider"} 1`; metrics.status != http.StatusOK || !strings.Contains(string(metrics.body), line) {
		t.Fatalf("payment's metrics (%d) lack %s", metrics.status, line)
	}

	// While it is open, new orders cancel with the reason, and no charge of
	// theirs reaches the provider.
	for range 3 {
		_, o := c.placeOrder(ann, mug.ID, 1, "tok_ok")
		if got := c.settle(ann, o.ID); got.Status != "CANCELLED" || got.Reason != "payment_unavailable" {
			t.Fatalf("order while the provider is down: %+v, want CANCELLED payment_unavailable", got)
		}
		if ps := c.payments(ann, o.ID); len(ps) != 1 || ps[0].Status != "DECLINED" || ps[0].Reason != "provider_unavailable" {
			t.Fatalf("its payment: %+v", ps)
		}
	}
	after := c.breakerAt(admin, breakers, "payment-provider")
	if after.State != "open" || after.Counts.Attempts != provider.Counts.Attempts || after.Counts.RejectedOpen < provider.Counts.RejectedOpen+3 {
		t.Fatalf("calls while open reached the provider: %+v then %+v", provider.Counts, after.Counts)
	}
	// Charges that were sent may have been captured: those orders wait.
	for _, id := range waiting {
		if got := c.do("GET", "/api/orders/"+id, ann, nil); !strings.Contains(string(got.body), `"PENDING"`) {
			t.Fatalf("an order whose charge was sent must wait for the provider: %s", got.body)
		}
	}

	// The fault clears: the waiting charges, redelivered, are the half-open
	// probes; the breaker closes and every order confirms.
	c.setChaos(admin, shop.ProviderService, paysim, map[string]any{"error_rate": 0})
	for _, id := range waiting {
		if got := c.settle(ann, id); got.Status != "CONFIRMED" {
			t.Fatalf("waiting order after the fault cleared: %+v", got)
		}
	}
	if b := c.breakerAt(admin, breakers, "payment-provider"); b.State != "closed" || b.Counts.Closed < 1 {
		t.Fatalf("provider breaker %+v after recovery, want closed", b)
	}
	_, o := c.placeOrder(ann, mug.ID, 1, "tok_ok")
	if got := c.settle(ann, o.ID); got.Status != "CONFIRMED" {
		t.Fatalf("new order after recovery: %+v", got)
	}
	if n := s.Provider().Captures(); n != len(waiting)+1 {
		t.Fatalf("%d captures, want %d", n, len(waiting)+1)
	}
}

// A slow inventory holds no more than its bulkhead's slots: calls beyond
// them fail fast, and calls to payment keep being answered meanwhile.
func TestShop_BulkheadKeepsASlowInventoryFromStarvingPayment(t *testing.T) {
	// The shipped policies, with a small bulkhead for inventory and a
	// timeout longer than the latency the test adds.
	policies := strings.Replace(string(deploy.Resilience()), "  inventory: {}\n",
		"  inventory:\n    timeout: 40s\n    bulkhead: {max_concurrent: 4, max_wait: 50ms}\n", 1)
	if policies == string(deploy.Resilience()) {
		t.Fatal("the shipped policy file has no inventory target to override")
	}
	s, c := startShop(t, t.TempDir(), func(cfg *shop.Config) { cfg.Resilience = []byte(policies) })
	t.Cleanup(func() { stopShop(t, s) })
	admin, ann := c.admin(), c.signUp("Ann")
	c.catalog()
	inventory := c.only(admin, "inventory")
	c.setChaos(admin, "inventory", inventory, map[string]any{"latency": "30s"})
	t.Cleanup(func() { c.setChaos(admin, "inventory", inventory, map[string]any{"latency": "0s"}) })

	// Twelve reads of the catalog at once: four take the slots and hang,
	// eight find none.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	statuses := make(chan int, 12)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for range 12 {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", c.base+"/api/products", nil)
			req.Header.Set("Cache-Control", "no-cache") // each read its own call, not one coalesced
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return // canceled at the end of the test
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		})
	}
	for range 8 {
		select {
		case st := <-statuses:
			if st != http.StatusServiceUnavailable {
				t.Fatalf("a read beyond the bulkhead answered %d, want 503", st)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("reads beyond the bulkhead did not fail fast")
		}
	}

	// Payment answers while inventory's four slots are held.
	var slowest time.Duration
	for range 20 {
		start := time.Now()
		if r := c.do("GET", "/api/payments?order_id="+uuid.Must(uuid.NewV7()).String(), ann, nil); r.status != http.StatusOK {
			t.Fatalf("payment while inventory is slow: %d %s", r.status, r.body)
		}
		slowest = max(slowest, time.Since(start))
	}
	select {
	case st := <-statuses:
		t.Fatalf("a slow read ended (%d) before the payment calls did", st)
	default:
	}
	b := c.breaker(admin, "inventory")
	if b.Counts.RejectedFull != 8 {
		t.Fatalf("bulkhead rejected %d reads, want 8", b.Counts.RejectedFull)
	}
	t.Logf("slowest of 20 payment calls while inventory hung: %v", slowest)
}

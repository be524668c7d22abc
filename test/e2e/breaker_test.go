package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mercato-shop/mercato/deploy"
	"github.com/mercato-shop/mercato/shop"
)

type breakerJSON struct {
	Target string `json:"target"`
	State  string `json:"state"`
	Counts struct {
		Attempts     uint64 `json:"attempts"`
		RejectedOpen uint64 `json:"rejected_open"`
		RejectedFull uint64 `json:"rejected_full"`
		Opened       uint64 `json:"opened"`
		Closed       uint64 `json:"closed"`
	} `json:"counts"`
}

// breaker is the gateway's breaker for target.
func (c client) breaker(admin, target string) breakerJSON {
	c.t.Helper()
	return c.breakerAt(admin, "/admin/breakers", target)
}

// breakerAt reads target's breaker from the breakers at path: the
// gateway's, or /admin/breakers/{service}/{instance} for an instance's.
func (c client) breakerAt(admin, path, target string) breakerJSON {
	c.t.Helper()
	var got struct {
		Breakers []breakerJSON `json:"breakers"`
	}
	r := c.do("GET", path, admin, nil)
	if r.status != http.StatusOK {
		c.t.Fatalf("breakers: %d %s", r.status, r.body)
	}
	r.json(c.t, &got)
	for _, b := range got.Breakers {
		if b.Target == target {
			return b
		}
	}
	return breakerJSON{Target: target, State: "unknown"}
}

// A service that fails every call: the gateway's breaker for it opens after
// its threshold, calls then fail fast without reaching it, and once the
// fault is cleared the half-open probe closes the breaker again.
func TestShop_GatewayBreakerOpensOnAFailingServiceAndCloses(t *testing.T) {
	// The shipped policies, with a short open delay for the test.
	policies := strings.Replace(string(deploy.Resilience()), "delay: 10s", "delay: 500ms", 1)
	if policies == string(deploy.Resilience()) {
		t.Fatal("the shipped policy file has no default breaker delay of 10s to shorten")
	}
	s, c := startShop(t, t.TempDir(), func(cfg *shop.Config) { cfg.Resilience = []byte(policies) })
	t.Cleanup(func() { stopShop(t, s) })
	admin := c.admin()
	c.catalog()
	if b := c.breaker(admin, "inventory"); b.State != "closed" {
		t.Fatalf("inventory breaker %+v before any fault", b)
	}

	var inventory string
	for id := range c.instances(admin, "inventory") {
		inventory = id
	}
	if r := c.do("PUT", "/admin/chaos/inventory/"+inventory, admin, map[string]any{"error_rate": 1}); r.status != http.StatusOK {
		t.Fatalf("chaos: %d %s", r.status, r.body)
	}
	// Each failing read is tried three times; five failures in a row open it.
	for i := 0; c.breaker(admin, "inventory").State != "open"; i++ {
		if i == 10 {
			t.Fatalf("breaker %+v after 10 failing calls", c.breaker(admin, "inventory"))
		}
		c.expectProblem(c.do("GET", "/api/products", "", nil), http.StatusServiceUnavailable, "a failing inventory")
	}
	open := c.breaker(admin, "inventory")
	metrics := c.do("GET", "/admin/metrics", admin, nil)
	if line := `mercato_circuit_breaker_state{state="open",target="inventory"} 1`; metrics.status != http.StatusOK || !strings.Contains(string(metrics.body), line) {
		t.Fatalf("the gateway's metrics (%d) lack %s", metrics.status, line)
	}
	r := c.do("GET", "/api/products", "", nil)
	c.expectProblem(r, http.StatusServiceUnavailable, "an open breaker")
	if after := c.breaker(admin, "inventory"); after.Counts.Attempts != open.Counts.Attempts || after.Counts.RejectedOpen <= open.Counts.RejectedOpen {
		t.Fatalf("a call while open reached inventory: %+v then %+v", open, after)
	}

	// The fault clears; after the delay a probe goes through and closes it.
	if r := c.do("PUT", "/admin/chaos/inventory/"+inventory, admin, map[string]any{"error_rate": 0}); r.status != http.StatusOK {
		t.Fatalf("chaos off: %d %s", r.status, r.body)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := c.do("GET", "/api/products", "", nil)
		if r.status == http.StatusOK && c.breaker(admin, "inventory").State == "closed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("breaker %+v, last answer %d", c.breaker(admin, "inventory"), r.status)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The gateway's own listener serves no internal admin route: identity
// headers sent by a client are dropped, and only routes with auth lead to
// an instance's switches.
func TestShop_EdgeServesNoInternalAdminRoutes(t *testing.T) {
	s, c := startShop(t, t.TempDir())
	t.Cleanup(func() { stopShop(t, s) })
	spoof := []string{"X-Mercato-Subject", "intruder", "X-Mercato-Roles", "admin"}
	for _, req := range []struct{ method, path string }{
		{"GET", "/admin/chaos"}, {"PUT", "/admin/chaos"}, {"POST", "/admin/chaos/kill"},
	} {
		r := c.do(req.method, req.path, "", map[string]any{"error_rate": 1}, spoof...)
		if r.status == http.StatusOK || r.status == http.StatusAccepted {
			t.Fatalf("%s %s with spoofed identity: %d %s", req.method, req.path, r.status, r.body)
		}
	}
	if r := c.do("GET", "/api/products", "", nil); r.status != http.StatusOK {
		t.Fatalf("the gateway stopped answering: %d", r.status)
	}
	c.expectProblem(c.do("GET", "/admin/breakers", "", nil, spoof...), http.StatusUnauthorized, "breakers with spoofed identity")
	c.expectProblem(c.do("GET", "/admin/metrics", "", nil, spoof...), http.StatusUnauthorized, "metrics with spoofed identity")
	// Instances serve /metrics to scrapers on their internal listeners; the
	// edge does not.
	if r := c.do("GET", "/metrics", "", nil); r.status == http.StatusOK {
		t.Fatalf("the edge served /metrics: %s", r.body)
	}
}

package e2e

import (
	"net/http"
	"strings"
	"testing"

	"github.com/mercato-shop/mercato/deploy"
	"github.com/mercato-shop/mercato/shop"
)

// A canary through real discovery: one of two inventory instances
// announces "canary"; new weights loaded through the admin API, without a
// restart, send the catalog's calls to it, then back.
func TestShop_CanaryByWeightsLoadedAtRunTime(t *testing.T) {
	s, c := startShop(t, t.TempDir(), func(cfg *shop.Config) {
		cfg.Replicas = map[string]int{"inventory": 2}
		cfg.Canary = []string{"inventory"}
	})
	t.Cleanup(func() { stopShop(t, s) })
	admin := c.admin()

	// calls counts the gateway's calls to each inventory instance, by version.
	calls := func() map[string]uint64 {
		t.Helper()
		out := map[string]uint64{}
		for _, inst := range c.instanceList(admin, "inventory") {
			out[inst.Instance.Version] += inst.Calls
		}
		return out
	}

	if v := calls(); len(v) != 2 {
		t.Fatalf("inventory versions %v, want stable and canary", v)
	}

	// The shipped routes, with the catalog's cache off and a split on it.
	load := func(weights string) {
		t.Helper()
		routes := strings.Replace(string(deploy.GatewayRoutes()), `  - path: /api/products
    methods: [GET]
    service: inventory
    auth: none
`, `  - path: /api/products
    methods: [GET]
    service: inventory
    auth: none
    split:
      weights: `+weights+`
      header: X-Canary
`, 1)
		routes = strings.Replace(routes, "    # The catalog changes slowly; stock is checked again when an order is\n    # placed. A client that needs it fresh sends Cache-Control: no-cache.\n    cache: 5s\n", "", 1)
		if r := c.do("PUT", "/admin/routes", admin, routes); r.status != http.StatusOK {
			t.Fatalf("load weights %s: %d %s", weights, r.status, r.body)
		}
	}
	read := func(n int, header ...string) map[string]uint64 {
		t.Helper()
		before := calls()
		for range n {
			if r := c.do("GET", "/api/products", "", nil, header...); r.status != http.StatusOK {
				t.Fatalf("catalog: %d %s", r.status, r.body)
			}
		}
		after := calls()
		return map[string]uint64{"stable": after["stable"] - before["stable"], "canary": after["canary"] - before["canary"]}
	}

	load("{stable: 0, canary: 100}")
	if got := read(20); got["canary"] != 20 || got["stable"] != 0 {
		t.Fatalf("all weight on the canary: %v", got)
	}
	load("{stable: 100, canary: 0}")
	if got := read(20); got["stable"] != 20 || got["canary"] != 0 {
		t.Fatalf("all weight back on stable: %v", got)
	}
	if got := read(10, "X-Canary", "canary"); got["canary"] != 10 || got["stable"] != 0 {
		t.Fatalf("X-Canary: canary, at weight 0: %v", got)
	}
}

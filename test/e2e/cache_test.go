package e2e

import (
	"io"
	"net/http"
	"sync"
	"testing"
)

// The catalog is answered from the gateway's cache: one call reaches
// inventory, the next is a hit; many callers at once on a cold key make one
// upstream call between them; no-cache goes to the service.
func TestShop_CatalogIsCached(t *testing.T) {
	s, c := startShop(t, t.TempDir())
	t.Cleanup(func() { stopShop(t, s) })
	admin := c.admin()
	inventory := c.only(admin, "inventory")
	calls := func() uint64 {
		t.Helper()
		for _, inst := range c.instanceList(admin, "inventory") {
			if inst.Instance.ID == inventory {
				return inst.Calls
			}
		}
		t.Fatal("inventory not listed")
		return 0
	}

	get := func(header ...string) (string, []byte) {
		t.Helper()
		req, _ := http.NewRequest("GET", c.base+"/api/products", nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("catalog: %d %s", resp.StatusCode, body)
		}
		return resp.Header.Get("X-Cache"), body
	}

	before := calls()
	first, body := get()
	second, again := get()
	if first != "MISS" || second != "HIT" || string(body) != string(again) {
		t.Fatalf("two reads: %s then %s", first, second)
	}
	if n := calls() - before; n != 1 {
		t.Fatalf("inventory got %d calls for two reads, want 1", n)
	}
	if x, _ := get("Cache-Control", "no-cache"); x != "MISS" && x != "BYPASS" {
		t.Fatalf("no-cache answered %s", x)
	}
	if n := calls() - before; n != 2 {
		t.Fatalf("no-cache did not reach inventory: %d calls", n)
	}

	// A cold key (another query) read by 20 callers at once: one call.
	before = calls()
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			req, _ := http.NewRequest("GET", c.base+"/api/products?cold=1", nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	if n := calls() - before; n != 1 {
		t.Fatalf("20 callers on a cold key made %d calls to inventory, want 1", n)
	}
}

package e2e

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mercato-shop/mercato/shop"
)

// The shipped limits: a person going through the shop at a person's pace
// never meets them; a script hammering one route meets them within
// seconds, with the headers that tell it when to come back.
func TestShop_RateLimits(t *testing.T) {
	s, c := startShop(t, t.TempDir(), func(cfg *shop.Config) { cfg.NoRateLimits = false })
	t.Cleanup(func() { stopShop(t, s) })

	// A person: signs up, browses, orders, watches the order; quick, but
	// a few requests a second at most.
	ann := c.signUp("Ann")
	mug := c.catalog()["MUG-001"]
	c.do("GET", "/api/products/"+mug.ID, "", nil)
	r, o := c.placeOrder(ann, mug.ID, 1, "tok_ok")
	if r.status != http.StatusAccepted {
		t.Fatalf("place: %d %s", r.status, r.body)
	}
	for range 10 {
		r := c.do("GET", "/api/orders/"+o.ID, ann, nil)
		if r.status != http.StatusOK {
			t.Fatalf("a person polling their order met %d %s", r.status, r.body)
		}
		time.Sleep(200 * time.Millisecond) // a person's pace, not a wait for a condition
	}

	// A script: the catalog as fast as it can; refused within seconds.
	start, n := time.Now(), 0
	var refused response
	for time.Since(start) < 10*time.Second {
		n++
		if r := c.do("GET", "/api/products", "", nil); r.status == http.StatusTooManyRequests {
			refused = r
			break
		}
	}
	if refused.status == 0 {
		t.Fatalf("%d reads in 10s were never refused", n)
	}
	if n > 100 {
		t.Fatalf("refused only after %d reads", n)
	}
	if ra, err := strconv.Atoi(refused.header.Get("Retry-After")); err != nil || ra < 1 {
		t.Fatalf("Retry-After %q", refused.header.Get("Retry-After"))
	}
	if p := refused.header.Get("RateLimit-Policy"); !strings.HasPrefix(p, `"route";q=`) {
		t.Fatalf("RateLimit-Policy %q", p)
	}
	if rl := refused.header.Get("RateLimit"); !strings.HasPrefix(rl, `"route";r=0;t=`) {
		t.Fatalf("RateLimit %q", rl)
	}
	c.expectProblem(refused, http.StatusTooManyRequests, "a hammering script")
	t.Logf("refused after %d reads in %v", n, time.Since(start))

	// The limit is per caller: a signed-in caller has their own.
	if r := c.do("GET", "/api/orders/"+o.ID, ann, nil); r.status != http.StatusOK {
		t.Fatalf("ann after the script was refused: %d", r.status)
	}
}

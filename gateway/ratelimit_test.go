package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/mercato-shop/mercato/platform/discovery"
)

func TestParseLimit(t *testing.T) {
	for in, want := range map[string]Limit{
		"10/second":          {Rate: 10, Period: time.Second, Burst: 10},
		"100/minute burst 5": {Rate: 100, Period: time.Minute, Burst: 5},
		"3/hour burst 30":    {Rate: 3, Period: time.Hour, Burst: 30},
		"off":                {},
	} {
		if got, err := ParseLimit(in); err != nil || got != want {
			t.Errorf("ParseLimit(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "10", "10/day", "0/second", "-1/second", "x/second", "10/second burst", "10/second burst 0",
		"10/second bursts 5", "10/second burst 5 extra", "2000000/second"} {
		if l, err := ParseLimit(in); err == nil {
			t.Errorf("ParseLimit(%q) = %+v, want an error", in, l)
		}
	}
}

func TestConfig_RateLimits(t *testing.T) {
	cfg, err := ParseConfig([]byte(strings.Replace(testRoutes, "routes:\n", "ratelimit:\n  default: 50/second burst 100\nroutes:\n", 1) + `  - path: /slow
    methods: [POST]
    service: customer
    auth: none
    ratelimit: 5/minute
  - path: /free
    methods: [GET]
    service: customer
    auth: none
    ratelimit: off
`))
	if err != nil {
		t.Fatal(err)
	}
	limits := map[string]string{}
	for _, r := range cfg.Routes {
		limits[r.name] = r.RateLimit.String()
	}
	for name, want := range map[string]string{
		"GET,POST /public": "50/second burst 100",
		"POST /slow":       "5/minute burst 5",
		"GET /free":        "off",
	} {
		if limits[name] != want {
			t.Errorf("%s: limit %q, want %q", name, limits[name], want)
		}
	}
	if cfg.RateLimit.Store != StoreMemory {
		t.Errorf("store %q, want memory by default", cfg.RateLimit.Store)
	}

	for bad, want := range map[string]string{
		"ratelimit:\n  store: disk\n":                      "ratelimit.store",
		"ratelimit:\n  store: redis\n  redis_url: nope\n":  "redis_url",
		"ratelimit:\n  default: 10/fortnight\n":            "unit must be",
		"ratelimit:\n  default: 10/second\n  window: 1m\n": "window",
	} {
		_, err := ParseConfig([]byte(strings.Replace(testRoutes, "routes:\n", bad+"routes:\n", 1)))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error about %s", bad, err, want)
		}
	}
	// A bad limit on a route names the route's line.
	_, err = ParseConfig([]byte(testRoutes + "  - path: /x\n    methods: [GET]\n    service: customer\n    ratelimit: lots\n"))
	if err == nil || !strings.Contains(err.Error(), "line 31") {
		t.Errorf("bad route limit: %v, want line 31 named", err)
	}
}

// The store's arithmetic, on a clock the test moves: a burst at once, then
// one request per interval.
func TestMemoryStore_GCRA(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	m := newMemoryStore(func() time.Time { return now })
	ctx := context.Background()
	l := Limit{Rate: 2, Period: time.Second, Burst: 3} // one per 500ms, three at once

	for i, want := range []int{2, 1, 0} {
		d, _ := m.allow(ctx, "k", l)
		if !d.allowed || d.remaining != want {
			t.Fatalf("request %d: %+v, want allowed with %d remaining", i+1, d, want)
		}
	}
	d, _ := m.allow(ctx, "k", l)
	if d.allowed || d.retryAfter != 500*time.Millisecond || d.resetAfter != 1500*time.Millisecond {
		t.Fatalf("fourth at once: %+v, want refused, retry in 500ms, whole in 1.5s", d)
	}
	if d, _ := m.allow(ctx, "other", l); !d.allowed {
		t.Fatal("another key shares the allowance")
	}
	now = now.Add(499 * time.Millisecond)
	if d, _ := m.allow(ctx, "k", l); d.allowed {
		t.Fatal("allowed before the interval passed")
	}
	now = now.Add(time.Millisecond)
	if d, _ := m.allow(ctx, "k", l); !d.allowed || d.remaining != 0 {
		t.Fatalf("after the interval: %+v, want one allowed", d)
	}
	// Idle long enough, the allowance is whole again, and the key is swept.
	now = now.Add(2 * time.Minute)
	if d, _ := m.allow(ctx, "other", l); !d.allowed || d.remaining != 2 {
		t.Fatalf("after idling: %+v", d)
	}
	if _, kept := m.tat["k"]; kept {
		t.Fatal("a key whose allowance was whole again was kept")
	}
}

const limitedRoutes = jwtLines + `ratelimit:
  default: 3/hour
%s
routes:
  - path: %s
    methods: [GET]
    service: customer
    auth: none
  - path: /private/{id}
    methods: [GET]
    service: customer
    auth: jwt
`

// limited builds a gateway for limitedRoutes whose /limited route allows
// three requests an hour per caller.
func limited(t *testing.T, store, path string, up *upstream, kf func() *Gateway) *Gateway {
	t.Helper()
	cfg, err := ParseConfig(fmt.Appendf(nil, limitedRoutes, store, path))
	if err != nil {
		t.Fatal(err)
	}
	gw := New(cfg, discovery.Transport(discovery.Static(map[string][]string{"customer": {up.addr()}}), nil),
		newSigner(t, "k1").jwksKeyfunc(t), slog.New(slog.DiscardHandler))
	t.Cleanup(func() { _ = gw.Close() })
	return gw
}

// from sends GET path to gw as a client at addr would.
func from(gw http.Handler, addr, path, token string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.RemoteAddr = addr + ":40000"
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, req)
	return w
}

func TestRateLimit_PerRouteAndCaller(t *testing.T) {
	up := newUpstream(t)
	gw := limited(t, "", "/limited", up, nil)

	for i := range 3 {
		w := from(gw, "192.0.2.1", "/limited", "")
		if w.Code != http.StatusOK {
			t.Fatalf("request %d: %d %s", i+1, w.Code, w.Body)
		}
		if got, want := w.Header().Get("RateLimit-Policy"), `"route";q=3;w=3600`; got != want {
			t.Fatalf("RateLimit-Policy %q, want %q", got, want)
		}
		if got, want := w.Header().Get("RateLimit"), fmt.Sprintf(`"route";r=%d;t=%d`, 2-i, 1200*(i+1)); got != want {
			t.Fatalf("request %d: RateLimit %q, want %q", i+1, got, want)
		}
	}
	w := from(gw, "192.0.2.1", "/limited", "")
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "1200" ||
		!strings.HasPrefix(w.Header().Get("Content-Type"), "application/problem+json") {
		t.Fatalf("fourth request: %d, Retry-After %q, %s", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	if n := len(up.received()); n != 3 {
		t.Fatalf("the upstream saw %d requests, want 3: a refused one is not forwarded", n)
	}
	// Another address has its own allowance; so has a signed-in caller,
	// whatever address it comes from.
	if w := from(gw, "192.0.2.2", "/limited", ""); w.Code != http.StatusOK {
		t.Fatalf("another address: %d", w.Code)
	}
	keys := newSigner(t, "k1")
	gw = limited(t, "", "/limited", up, nil)
	gw.auth = newAuthenticator(JWTConfig{Issuer: "mercato", Audience: "mercato"}, keys.jwksKeyfunc(t))
	ann, bob := keys.sign(t, claimsFor("ann")), keys.sign(t, claimsFor("bob"))
	for i := range 3 {
		if w := from(gw, fmt.Sprintf("198.51.100.%d", i), "/private/1", ann); w.Code != http.StatusOK {
			t.Fatalf("ann's request %d: %d %s", i+1, w.Code, w.Body)
		}
	}
	if w := from(gw, "198.51.100.9", "/private/1", ann); w.Code != http.StatusTooManyRequests {
		t.Fatalf("ann from a fourth address: %d, want 429", w.Code)
	}
	if w := from(gw, "198.51.100.0", "/private/1", bob); w.Code != http.StatusOK {
		t.Fatalf("bob from ann's address: %d", w.Code)
	}
}

// Two gateway instances sharing Redis enforce one limit together.
func TestRateLimit_SharedThroughRedis(t *testing.T) {
	url := os.Getenv("MERCATO_TEST_REDIS")
	if url == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("MERCATO_TEST_REDIS is not set; CI must run the Redis tests")
		}
		t.Skip("set MERCATO_TEST_REDIS (redis://127.0.0.1:6379/0) to run the Redis tests")
	}
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	probe := redis.NewClient(opts)
	defer probe.Close()
	if err := probe.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("redis at %s: %v", url, err)
	}

	up := newUpstream(t)
	// A path of its own: runs of the test never share a key.
	path := "/limited/" + uuid.NewString()
	store := "  store: redis\n  redis_url: " + url
	a, b := limited(t, store, path, up, nil), limited(t, store, path, up, nil)
	passed := 0
	for i := range 12 {
		gw := a
		if i%2 == 1 {
			gw = b
		}
		switch w := from(gw, "192.0.2.7", path, ""); w.Code {
		case http.StatusOK:
			passed++
		case http.StatusTooManyRequests:
		default:
			t.Fatalf("request %d: %d %s", i+1, w.Code, w.Body)
		}
	}
	if passed != 3 || len(up.received()) != 3 {
		t.Fatalf("%d requests passed through two gateways (upstream saw %d), want 3 together", passed, len(up.received()))
	}
}

// A store that fails lets requests through, without limit headers.
func TestRateLimit_StoreDownFailsOpen(t *testing.T) {
	up := newUpstream(t)
	gw := limited(t, "  store: redis\n  redis_url: redis://"+closedAddr(t)+"/0", "/limited", up, nil)
	for i := range 5 {
		w := from(gw, "192.0.2.1", "/limited", "")
		if w.Code != http.StatusOK || w.Header().Get("RateLimit") != "" {
			t.Fatalf("request %d with the store down: %d, RateLimit %q", i+1, w.Code, w.Header().Get("RateLimit"))
		}
	}
}

// A caller refused for its token is limited by its address all the same.
func TestRateLimit_RefusedTokensCountAgainstTheAddress(t *testing.T) {
	up := newUpstream(t)
	gw := limited(t, "", "/limited", up, nil)
	for i := range 3 {
		if w := from(gw, "192.0.2.5", "/private/1", "not-a-token"); w.Code != http.StatusUnauthorized {
			t.Fatalf("bad token %d: %d", i+1, w.Code)
		}
	}
	if w := from(gw, "192.0.2.5", "/private/1", "not-a-token"); w.Code != http.StatusTooManyRequests {
		t.Fatalf("fourth bad token from one address: %d, want 429", w.Code)
	}
	up.wantNothing(t)
}

// Anonymous IPv6 callers share their /64: one host holds a whole one.
func TestRateLimit_IPv6CallersShareTheirSlash64(t *testing.T) {
	up := newUpstream(t)
	gw := limited(t, "", "/limited", up, nil)
	for i := range 3 {
		if w := from(gw, fmt.Sprintf("[2001:db8:1:2::%x]", i+1), "/limited", ""); w.Code != http.StatusOK {
			t.Fatalf("request %d: %d", i+1, w.Code)
		}
	}
	if w := from(gw, "[2001:db8:1:2:ffff::1]", "/limited", ""); w.Code != http.StatusTooManyRequests {
		t.Fatalf("a fourth address in the same /64: %d, want 429", w.Code)
	}
	if w := from(gw, "[2001:db8:1:3::1]", "/limited", ""); w.Code != http.StatusOK {
		t.Fatalf("another /64: %d", w.Code)
	}
	if w := from(gw, "[::ffff:192.0.2.9]", "/limited", ""); w.Code != http.StatusOK {
		t.Fatalf("an IPv4-mapped address: %d", w.Code)
	}
}

package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.yaml.in/yaml/v3"

	"github.com/mercato-shop/mercato/platform/web"
)

const cacheRoute = "GET /api/products"

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// countingUpstream stands in for the proxy: it counts its calls and
// answers with answer.
type countingUpstream struct {
	calls  atomic.Int32
	answer func(n int32, w http.ResponseWriter, r *http.Request)
}

func (u *countingUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.answer(u.calls.Add(1), w, r)
}

// upstreamAnswering answers 200 with body "answer N" (N the call's number)
// and the headers given as name, value pairs.
func upstreamAnswering(header ...string) *countingUpstream {
	return &countingUpstream{answer: func(n int32, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Add(header[i], header[i+1])
		}
		_, _ = w.Write([]byte("answer " + strconv.Itoa(int(n))))
	}}
}

// do sends method target with headers (name, value pairs) through c.
func cacheDo(c *responseCache, cfg CacheConfig, next http.Handler, method, target string, header ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Add(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	c.serve(w, r, cacheRoute, cfg, next)
	return w
}

func cacheGet(c *responseCache, cfg CacheConfig, next http.Handler, target string, header ...string) *httptest.ResponseRecorder {
	return cacheDo(c, cfg, next, http.MethodGet, target, header...)
}

func assertAnswer(t *testing.T, w *httptest.ResponseRecorder, xcache, body string) {
	t.Helper()
	if w.Code != http.StatusOK || w.Header().Get("X-Cache") != xcache || w.Body.String() != body {
		t.Fatalf("got %d X-Cache %q body %q; want 200 %s %q", w.Code, w.Header().Get("X-Cache"), w.Body.String(), xcache, body)
	}
}

func (c *responseCache) keys() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for k := range c.entries {
		out = append(out, k)
	}
	return out
}

func TestCache_MissThenHitCallsTheUpstreamOnce(t *testing.T) {
	clock := newFakeClock()
	c := newResponseCache(1<<20, clock.now)
	next := upstreamAnswering()
	cfg := CacheConfig{TTL: 10 * time.Second}

	first := cacheGet(c, cfg, next, "/api/products")
	assertAnswer(t, first, "MISS", "answer 1")
	if first.Header().Get("Age") != "" {
		t.Errorf("a miss carries Age %q", first.Header().Get("Age"))
	}
	clock.advance(3 * time.Second)
	// The gateway's own headers on the writer stay the request's own.
	r := httptest.NewRequest(http.MethodGet, "/api/products", nil)
	w := httptest.NewRecorder()
	w.Header().Set("X-Correlation-ID", "second")
	c.serve(w, r, cacheRoute, cfg, next)
	assertAnswer(t, w, "HIT", "answer 1")
	if got := w.Header().Get("Age"); got != "3" {
		t.Errorf("Age %q, want 3", got)
	}
	if got := w.Header().Values("X-Correlation-ID"); !slices.Equal(got, []string{"second"}) {
		t.Errorf("X-Correlation-ID %q, want only this request's", got)
	}
	if got := w.Header().Get("Content-Type"); got != "text/plain" {
		t.Errorf("Content-Type %q, want the upstream's", got)
	}
	if got := w.Header().Get("Content-Length"); got != "8" {
		t.Errorf("Content-Length %q, want 8", got)
	}
	if n := next.calls.Load(); n != 1 {
		t.Fatalf("upstream called %d times, want 1", n)
	}
	if got := testutil.ToFloat64(c.hits.WithLabelValues(cacheRoute)); got != 1 {
		t.Errorf("hits %v, want 1", got)
	}
	if got := testutil.ToFloat64(c.misses.WithLabelValues(cacheRoute)); got != 1 {
		t.Errorf("misses %v, want 1", got)
	}
}

func TestCache_KeyedByQueryAndVaryingHeaders(t *testing.T) {
	c := newResponseCache(1<<20, newFakeClock().now)
	next := upstreamAnswering()
	cfg := CacheConfig{TTL: time.Minute, Vary: []string{"Authorization"}}
	const alice, bob = "Bearer alice.secret.token", "Bearer bob.secret.token"

	assertAnswer(t, cacheGet(c, cfg, next, "/api/products?a=1&b=2", "Authorization", alice), "MISS", "answer 1")
	// The same parameters in another order are the same query.
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products?b=2&a=1", "Authorization", alice), "HIT", "answer 1")
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products?a=1&b=3", "Authorization", alice), "MISS", "answer 2")
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products?a=1&b=2", "Authorization", bob), "MISS", "answer 3")
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products?a=1&b=2"), "MISS", "answer 4")
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products?a=1&b=2", "Authorization", bob), "HIT", "answer 3")
	// A repeated parameter's values keep their order.
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products?a=1&a=2"), "MISS", "answer 5")
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products?a=2&a=1"), "MISS", "answer 6")

	keys := c.keys()
	if len(keys) != 6 {
		t.Fatalf("%d entries, want 6: %q", len(keys), keys)
	}
	for _, k := range keys {
		if strings.Contains(k, "secret") || strings.Contains(k, "alice") || strings.Contains(k, "bob") {
			t.Errorf("a key holds the raw token: %q", k)
		}
	}
}

// A route whose vary leaves Authorization out shares one answer between
// callers: that is for public routes only (auth: none), whose upstreams
// never see who calls.
func TestCache_WithoutVaryAuthorizationCallersShare(t *testing.T) {
	c := newResponseCache(1<<20, newFakeClock().now)
	next := upstreamAnswering()
	cfg := CacheConfig{TTL: time.Minute}

	assertAnswer(t, cacheGet(c, cfg, next, "/api/products", "Authorization", "Bearer alice"), "MISS", "answer 1")
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products", "Authorization", "Bearer bob"), "HIT", "answer 1")
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products"), "HIT", "answer 1")
}

// The identity the gateway verified is part of every key, so an
// authenticated route does not share answers even when vary forgets
// Authorization.
func TestCache_VerifiedCallersNeverShare(t *testing.T) {
	c := newResponseCache(1<<20, newFakeClock().now)
	next := upstreamAnswering()
	cfg := CacheConfig{TTL: time.Minute}

	assertAnswer(t, cacheGet(c, cfg, next, "/api/orders", web.SubjectHeader, "alice"), "MISS", "answer 1")
	assertAnswer(t, cacheGet(c, cfg, next, "/api/orders", web.SubjectHeader, "bob"), "MISS", "answer 2")
	assertAnswer(t, cacheGet(c, cfg, next, "/api/orders", web.SubjectHeader, "alice", web.RolesHeader, "admin"), "MISS", "answer 3")
	assertAnswer(t, cacheGet(c, cfg, next, "/api/orders", web.SubjectHeader, "alice"), "HIT", "answer 1")
}

func TestCache_HonoursTheUpstreamsCacheControl(t *testing.T) {
	tests := []struct {
		name   string
		header []string
		vary   []string
		// fresh is how long the answer is served from the cache; 0 is
		// not stored.
		fresh time.Duration
	}{
		{name: "none: the route's ttl", fresh: 10 * time.Second},
		{name: "no-store", header: []string{"Cache-Control", "no-store"}},
		{name: "no-cache", header: []string{"Cache-Control", "public, no-cache"}},
		{name: "private", header: []string{"Cache-Control", "private, max-age=60"}},
		{name: "private per caller", header: []string{"Cache-Control", "private"}, vary: []string{"Authorization"}, fresh: 10 * time.Second},
		{name: "max-age shortens", header: []string{"Cache-Control", "max-age=1"}, fresh: time.Second},
		{name: "max-age never lengthens", header: []string{"Cache-Control", "public, max-age=3600"}, fresh: 10 * time.Second},
		{name: "s-maxage wins over max-age", header: []string{"Cache-Control", "max-age=1, s-maxage=4"}, fresh: 4 * time.Second},
		{name: "max-age=0", header: []string{"Cache-Control", "max-age=0"}},
		{name: "invalid max-age", header: []string{"Cache-Control", "max-age=soon"}},
		{name: "age counts", header: []string{"Cache-Control", "max-age=5", "Age", "3"}, fresh: 2 * time.Second},
		{name: "expires", header: []string{"Date", "Sun, 01 Mar 2026 12:00:00 GMT", "Expires", "Sun, 01 Mar 2026 12:00:06 GMT"}, fresh: 6 * time.Second},
		{name: "expires 0", header: []string{"Expires", "0"}},
		{name: "set-cookie", header: []string{"Set-Cookie", "session=abc"}},
		{name: "vary beyond the key", header: []string{"Vary", "Accept-Encoding"}},
		{name: "vary within the key", header: []string{"Vary", "authorization"}, vary: []string{"Authorization"}, fresh: 10 * time.Second},
		{name: "vary *", header: []string{"Vary", "*"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			c := newResponseCache(1<<20, clock.now)
			next := upstreamAnswering(tt.header...)
			cfg := CacheConfig{TTL: 10 * time.Second, Vary: tt.vary}

			assertAnswer(t, cacheGet(c, cfg, next, "/api/products"), "MISS", "answer 1")
			if tt.fresh == 0 {
				assertAnswer(t, cacheGet(c, cfg, next, "/api/products"), "MISS", "answer 2")
				if len(c.keys()) != 0 {
					t.Fatalf("stored: %q", c.keys())
				}
				return
			}
			clock.advance(tt.fresh - time.Millisecond)
			assertAnswer(t, cacheGet(c, cfg, next, "/api/products"), "HIT", "answer 1")
			clock.advance(time.Millisecond)
			assertAnswer(t, cacheGet(c, cfg, next, "/api/products"), "MISS", "answer 2")
		})
	}
}

func TestCache_AgeIncludesTheUpstreamsAge(t *testing.T) {
	clock := newFakeClock()
	c := newResponseCache(1<<20, clock.now)
	next := upstreamAnswering("Age", "3")
	cfg := CacheConfig{TTL: 10 * time.Second}

	if got := cacheGet(c, cfg, next, "/api/products").Header().Values("Age"); !slices.Equal(got, []string{"3"}) {
		t.Errorf("miss: Age %q, want the upstream's 3", got)
	}
	clock.advance(2 * time.Second)
	if got := cacheGet(c, cfg, next, "/api/products").Header().Values("Age"); !slices.Equal(got, []string{"5"}) {
		t.Errorf("hit: Age %q, want 5", got)
	}
}

func TestCache_StoresOnly200(t *testing.T) {
	for _, status := range []int{http.StatusCreated, http.StatusNoContent, http.StatusPartialContent, http.StatusMovedPermanently, http.StatusNotFound, http.StatusServiceUnavailable} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			c := newResponseCache(1<<20, newFakeClock().now)
			next := &countingUpstream{answer: func(_ int32, w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(status)
			}}
			cfg := CacheConfig{TTL: time.Minute}
			for range 2 {
				w := cacheGet(c, cfg, next, "/api/products")
				if w.Code != status || w.Header().Get("X-Cache") != "MISS" {
					t.Fatalf("got %d %q, want %d MISS", w.Code, w.Header().Get("X-Cache"), status)
				}
			}
			if n := next.calls.Load(); n != 2 {
				t.Fatalf("upstream called %d times, want 2", n)
			}
		})
	}
}

func TestCache_EntriesExpireAfterTheTTL(t *testing.T) {
	clock := newFakeClock()
	c := newResponseCache(1<<20, clock.now)
	next := upstreamAnswering()
	cfg := CacheConfig{TTL: 30 * time.Second}

	assertAnswer(t, cacheGet(c, cfg, next, "/api/products"), "MISS", "answer 1")
	clock.advance(30*time.Second - time.Nanosecond)
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products"), "HIT", "answer 1")
	clock.advance(time.Nanosecond)
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products"), "MISS", "answer 2")
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products"), "HIT", "answer 2")
	if len(c.keys()) != 1 {
		t.Fatalf("entries %q, want the fresh one only", c.keys())
	}

	// Freshness counts from the request: an answer that took the whole TTL
	// to come is stale on arrival.
	slow := &countingUpstream{answer: func(_ int32, w http.ResponseWriter, _ *http.Request) {
		clock.advance(cfg.TTL)
		_, _ = w.Write([]byte("late"))
	}}
	assertAnswer(t, cacheGet(c, cfg, slow, "/api/products?slow"), "MISS", "late")
	assertAnswer(t, cacheGet(c, cfg, slow, "/api/products?slow"), "MISS", "late")
}

func TestCache_EvictsTheLeastRecentlyUsedWithinItsBudget(t *testing.T) {
	next := upstreamAnswering("X-Shelf", "42")
	cfg := CacheConfig{TTL: time.Minute}
	// Every entry here has the same size: a key of the same length, the
	// body "answer N" and the same headers.
	probe := newResponseCache(1<<20, newFakeClock().now)
	cacheGet(probe, cfg, next, "/api/products?p=a")
	key := probe.keys()[0]
	size := int64(len(key) + len("answer 1") + len("Content-Type") + len("text/plain") + len("X-Shelf") + len("42"))
	if got := probe.size; got != size {
		t.Fatalf("entry counted as %d bytes, want %d", got, size)
	}

	next.calls.Store(0)
	c := newResponseCache(3*size, newFakeClock().now)
	for _, p := range []string{"a", "b", "c"} {
		cacheGet(c, cfg, next, "/api/products?p="+p)
	}
	if got := testutil.ToFloat64(c.bytes); got != float64(3*size) {
		t.Fatalf("bytes %v, want %d: three entries fill the budget exactly", got, 3*size)
	}
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products?p=a"), "HIT", "answer 1")  // a is now the most recent
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products?p=d"), "MISS", "answer 4") // evicts b
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products?p=a"), "HIT", "answer 1")
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products?p=c"), "HIT", "answer 3")
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products?p=d"), "HIT", "answer 4")
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products?p=b"), "MISS", "answer 5") // evicts a
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products?p=a"), "MISS", "answer 6")
	if got := testutil.ToFloat64(c.evictions); got != 3 {
		t.Errorf("evictions %v, want 3 (b, a, then c)", got)
	}
	if c.size != 3*size || len(c.keys()) != 3 {
		t.Errorf("%d bytes in %d entries, want %d in 3", c.size, len(c.keys()), 3*size)
	}

	// An entry larger than the whole budget is not stored, and evicts nothing.
	small := newResponseCache(size-1, newFakeClock().now)
	cacheGet(small, cfg, next, "/api/products?p=a")
	if small.size != 0 || testutil.ToFloat64(small.evictions) != 0 {
		t.Errorf("an entry over the budget: %d bytes, %v evictions", small.size, testutil.ToFloat64(small.evictions))
	}
}

func TestCache_OversizedBodiesStreamThroughAndAreNotStored(t *testing.T) {
	c := newResponseCache(1<<20, newFakeClock().now)
	cfg := CacheConfig{TTL: time.Minute, MaxEntryBytes: 1000}
	chunk := strings.Repeat("x", 400)
	var client *httptest.ResponseRecorder
	next := &countingUpstream{answer: func(_ int32, w http.ResponseWriter, _ *http.Request) {
		// The leader's copy is held while the answer may still be stored,
		// goes out whole once it is too large, then each chunk as it comes.
		for i, want := range []int{0, 0, 1200, 1600} {
			_, _ = w.Write([]byte(chunk))
			if got := client.Body.Len(); got != want {
				t.Errorf("after chunk %d the client has %d bytes, want %d", i+1, got, want)
			}
		}
	}}
	for range 2 {
		client = httptest.NewRecorder()
		c.serve(client, httptest.NewRequest(http.MethodGet, "/api/products", nil), cacheRoute, cfg, next)
		if client.Body.String() != strings.Repeat(chunk, 4) || client.Header().Get("X-Cache") != "MISS" {
			t.Fatalf("got %d bytes, X-Cache %q; want all 1600, MISS", client.Body.Len(), client.Header().Get("X-Cache"))
		}
	}
	if n := next.calls.Load(); n != 2 {
		t.Fatalf("upstream called %d times, want 2: nothing stored", n)
	}

	// A body of exactly the limit is stored.
	exact := upstreamAnswering()
	cacheGet(c, CacheConfig{TTL: time.Minute, MaxEntryBytes: int64(len("answer 1"))}, exact, "/api/products?exact")
	assertAnswer(t, cacheGet(c, cfg, exact, "/api/products?exact"), "HIT", "answer 1")
}

// blockingUpstream answers once released, counting its calls.
type blockingUpstream struct {
	calls   atomic.Int32
	release chan struct{}
	header  []string
}

func (u *blockingUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.calls.Add(1)
	select {
	case <-u.release:
	case <-r.Context().Done():
		w.WriteHeader(499)
		return
	}
	for i := 0; i+1 < len(u.header); i += 2 {
		w.Header().Set(u.header[i], u.header[i+1])
	}
	_, _ = w.Write([]byte("catalog"))
}

// eventually polls cond until it holds, failing after a generous deadline.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not so after 10s: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitForWaiters polls until n requests wait for calls in flight.
func waitForWaiters(t *testing.T, c *responseCache, n int) {
	t.Helper()
	eventually(t, strconv.Itoa(n)+" requests wait", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		got := 0
		for _, f := range c.flights {
			got += f.waiters
		}
		return got == n
	})
}

func TestCache_ConcurrentMissesMakeOneUpstreamCall(t *testing.T) {
	c := newResponseCache(1<<20, newFakeClock().now)
	next := &blockingUpstream{release: make(chan struct{})}
	cfg := CacheConfig{TTL: time.Minute}

	const n = 50
	answers := make([]*httptest.ResponseRecorder, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { answers[i] = cacheGet(c, cfg, next, "/api/products") })
	}
	waitForWaiters(t, c, n-1)
	close(next.release)
	wg.Wait()

	if got := next.calls.Load(); got != 1 {
		t.Fatalf("upstream called %d times, want 1", got)
	}
	var misses, hits int
	for _, w := range answers {
		if w.Code != http.StatusOK || w.Body.String() != "catalog" {
			t.Fatalf("got %d %q, want 200 catalog", w.Code, w.Body.String())
		}
		switch w.Header().Get("X-Cache") {
		case "MISS":
			misses++
		case "HIT":
			hits++
		}
	}
	if misses != 1 || hits != n-1 {
		t.Errorf("%d misses and %d hits, want 1 and %d", misses, hits, n-1)
	}
}

func TestCache_AWaiterWhoseContextEndsStopsWaiting(t *testing.T) {
	c := newResponseCache(1<<20, newFakeClock().now)
	next := &blockingUpstream{release: make(chan struct{})}
	cfg := CacheConfig{TTL: time.Minute}

	leader := make(chan *httptest.ResponseRecorder)
	go func() { leader <- cacheGet(c, cfg, next, "/api/products") }()
	ctx, cancel := context.WithCancel(context.Background())
	waiter := make(chan *httptest.ResponseRecorder)
	go func() {
		r := httptest.NewRequestWithContext(ctx, http.MethodGet, "/api/products", nil)
		w := httptest.NewRecorder()
		c.serve(w, r, cacheRoute, cfg, next)
		waiter <- w
	}()
	waitForWaiters(t, c, 1)
	cancel()
	select {
	case w := <-waiter:
		if w.Code != 499 {
			t.Errorf("the waiter got %d, want 499", w.Code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the canceled waiter still waits")
	}
	close(next.release)
	assertAnswer(t, <-leader, "MISS", "catalog")
}

func TestCache_WaitersCallThemselvesWhenTheAnswerCannotBeShared(t *testing.T) {
	c := newResponseCache(1<<20, newFakeClock().now)
	next := &blockingUpstream{release: make(chan struct{}), header: []string{"Cache-Control", "no-store"}}
	cfg := CacheConfig{TTL: time.Minute}

	const n = 5
	var wg sync.WaitGroup
	answers := make([]*httptest.ResponseRecorder, n)
	for i := range n {
		wg.Go(func() { answers[i] = cacheGet(c, cfg, next, "/api/products") })
	}
	waitForWaiters(t, c, n-1)
	close(next.release)
	wg.Wait()
	if got := next.calls.Load(); got != n {
		t.Fatalf("upstream called %d times, want %d", got, n)
	}
	for _, w := range answers {
		assertAnswer(t, w, "MISS", "catalog")
	}
}

func TestCache_APanickingUpstreamLetsItsWaitersGo(t *testing.T) {
	c := newResponseCache(1<<20, newFakeClock().now)
	release := make(chan struct{})
	next := &countingUpstream{answer: func(n int32, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			<-release
			_, _ = w.Write([]byte("cata"))
			panic(http.ErrAbortHandler) // what the proxy does when the body breaks off
		}
		_, _ = w.Write([]byte("catalog"))
	}}
	cfg := CacheConfig{TTL: time.Minute}

	leader := make(chan any)
	go func() {
		defer func() { leader <- recover() }()
		cacheGet(c, cfg, next, "/api/products")
	}()
	eventually(t, "the upstream is called", func() bool { return next.calls.Load() == 1 })
	waiter := make(chan *httptest.ResponseRecorder)
	go func() { waiter <- cacheGet(c, cfg, next, "/api/products") }()
	waitForWaiters(t, c, 1)
	close(release)
	if v := <-leader; !errors.Is(v.(error), http.ErrAbortHandler) {
		t.Fatalf("the leader's panic was %v", v)
	}
	assertAnswer(t, <-waiter, "MISS", "catalog")
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.flights) != 0 {
		t.Errorf("flights left: %d", len(c.flights))
	}
}

func TestCache_ClientNoCacheAndNoStoreBypass(t *testing.T) {
	c := newResponseCache(1<<20, newFakeClock().now)
	next := upstreamAnswering()
	cfg := CacheConfig{TTL: time.Minute}

	assertAnswer(t, cacheGet(c, cfg, next, "/api/products"), "MISS", "answer 1")
	// no-cache: a fresh answer, which then refreshes the entry.
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products", "Cache-Control", "no-cache"), "BYPASS", "answer 2")
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products"), "HIT", "answer 2")
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products", "Pragma", "no-cache"), "BYPASS", "answer 3")
	// no-store: a fresh answer that is not kept.
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products", "Cache-Control", "max-age=0, no-store"), "BYPASS", "answer 4")
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products"), "HIT", "answer 3")
	// Conditional and range requests go to the upstream, which knows the
	// validators, and their answers are not kept.
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products", "If-None-Match", `"v1"`), "BYPASS", "answer 5")
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products", "Range", "bytes=0-3"), "BYPASS", "answer 6")
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products"), "HIT", "answer 3")
	if got := testutil.ToFloat64(c.bypasses.WithLabelValues(cacheRoute)); got != 5 {
		t.Errorf("bypasses %v, want 5", got)
	}
}

func TestCache_OnlyGETIsCached(t *testing.T) {
	c := newResponseCache(1<<20, newFakeClock().now)
	next := upstreamAnswering()
	cfg := CacheConfig{TTL: time.Minute}

	for i, method := range []string{http.MethodPost, http.MethodPost, http.MethodPut, http.MethodDelete} {
		w := cacheDo(c, cfg, next, method, "/api/products")
		if w.Body.String() != "answer "+strconv.Itoa(i+1) || w.Header().Get("X-Cache") != "" {
			t.Fatalf("%s: got %q X-Cache %q; want the upstream's answer, untouched", method, w.Body.String(), w.Header().Get("X-Cache"))
		}
	}
	if len(c.keys()) != 0 {
		t.Fatalf("stored: %q", c.keys())
	}
	// An upgrade (websocket) is a GET that is not an answer to keep.
	w := cacheGet(c, cfg, next, "/api/products", "Connection", "Upgrade", "Upgrade", "websocket")
	if w.Header().Get("X-Cache") != "" || len(c.keys()) != 0 {
		t.Fatalf("an upgrade went through the cache")
	}
}

func TestCache_HEADIsAnsweredFromAGETEntry(t *testing.T) {
	c := newResponseCache(1<<20, newFakeClock().now)
	next := upstreamAnswering()
	cfg := CacheConfig{TTL: time.Minute}

	w := cacheDo(c, cfg, next, http.MethodHead, "/api/products")
	if w.Header().Get("X-Cache") != "BYPASS" || len(c.keys()) != 0 {
		t.Fatalf("a HEAD miss: X-Cache %q, %d entries; want BYPASS and none", w.Header().Get("X-Cache"), len(c.keys()))
	}
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products"), "MISS", "answer 2")
	w = cacheDo(c, cfg, next, http.MethodHead, "/api/products")
	if w.Code != http.StatusOK || w.Header().Get("X-Cache") != "HIT" || w.Body.Len() != 0 || w.Header().Get("Content-Length") != "8" {
		t.Fatalf("a HEAD hit: %d X-Cache %q Content-Length %q body %q", w.Code, w.Header().Get("X-Cache"), w.Header().Get("Content-Length"), w.Body.String())
	}
	if n := next.calls.Load(); n != 2 {
		t.Fatalf("upstream called %d times, want 2", n)
	}
}

func TestCache_ResetDropsEverything(t *testing.T) {
	c := newResponseCache(1<<20, newFakeClock().now)
	next := &blockingUpstream{release: make(chan struct{})}
	cfg := CacheConfig{TTL: time.Minute}
	close(next.release)
	cacheGet(c, cfg, next, "/api/products")

	c.reset(1 << 20)
	if len(c.keys()) != 0 || c.size != 0 || testutil.ToFloat64(c.bytes) != 0 {
		t.Fatalf("after reset: %d entries, %d bytes", len(c.keys()), c.size)
	}
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products"), "MISS", "catalog")
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products"), "HIT", "catalog")
	// The new budget holds from then on.
	c.reset(10)
	cacheGet(c, cfg, next, "/api/products")
	if len(c.keys()) != 0 {
		t.Fatalf("stored beyond the new budget: %q", c.keys())
	}
	c.reset(1 << 20)

	// A miss in flight across a reset answers its client and stores nothing.
	slow := &blockingUpstream{release: make(chan struct{})}
	done := make(chan *httptest.ResponseRecorder)
	go func() { done <- cacheGet(c, cfg, slow, "/api/products?slow") }()
	eventually(t, "the upstream is called", func() bool { return slow.calls.Load() == 1 })
	c.reset(1 << 20)
	close(slow.release)
	assertAnswer(t, <-done, "MISS", "catalog")
	if len(c.keys()) != 0 {
		t.Fatalf("stored across a reset: %q", c.keys())
	}
}

func TestCache_MetricsRegister(t *testing.T) {
	c := newResponseCache(1<<20, newFakeClock().now)
	cacheGet(c, CacheConfig{TTL: time.Minute}, upstreamAnswering(), "/api/products")
	reg := prometheus.NewPedanticRegistry()
	for _, col := range c.collectors() {
		if err := reg.Register(col); err != nil {
			t.Fatal(err)
		}
	}
	n, err := testutil.GatherAndCount(reg, "mercato_gateway_cache_hits_total", "mercato_gateway_cache_misses_total",
		"mercato_gateway_cache_bypasses_total", "mercato_gateway_cache_evictions_total", "mercato_gateway_cache_bytes")
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 { // misses{route}, evictions, bytes: counters with no route yet have no series
		t.Errorf("%d series, want 3", n)
	}
}

func TestParseCacheConfig(t *testing.T) {
	valid := []struct {
		yaml string
		want CacheConfig
	}{
		{"30s", CacheConfig{TTL: 30 * time.Second, MaxEntryBytes: defaultMaxEntryBytes}},
		{"24h", CacheConfig{TTL: 24 * time.Hour, MaxEntryBytes: defaultMaxEntryBytes}},
		{"{ttl: 1m}", CacheConfig{TTL: time.Minute, MaxEntryBytes: defaultMaxEntryBytes}},
		{"{ttl: 10s, vary: [authorization, Accept-Language, AUTHORIZATION], max_entry_bytes: 65536}",
			CacheConfig{TTL: 10 * time.Second, Vary: []string{"Authorization", "Accept-Language"}, MaxEntryBytes: 65536}},
		{"ttl: 5s\nvary: []\n", CacheConfig{TTL: 5 * time.Second, MaxEntryBytes: defaultMaxEntryBytes}},
	}
	for _, tt := range valid {
		got, err := parseCacheConfig(cacheNode(t, tt.yaml))
		if err != nil {
			t.Errorf("%q: %v", tt.yaml, err)
			continue
		}
		if got.TTL != tt.want.TTL || got.MaxEntryBytes != tt.want.MaxEntryBytes || !slices.Equal(got.Vary, tt.want.Vary) {
			t.Errorf("%q: got %+v, want %+v", tt.yaml, got, tt.want)
		}
	}
	invalid := []struct{ yaml, says string }{
		{"0s", "ttl"},
		{"-5s", "ttl"},
		{"25h", "ttl"},
		{"30", "ttl"},
		{"soon", "ttl"},
		{`""`, "ttl"},
		{"[30s]", "duration"},
		{"{vary: [Authorization]}", "ttl is required"},
		{"{ttl: 0s}", "ttl"},
		{"{ttl: [1s]}", "ttl"},
		{"{ttl: 1s, ttl: 2s}", "twice"},
		{"{ttl: 1s, tll: 2s}", `unknown key "tll"`},
		{"{ttl: 1s, vary: Authorization}", "list"},
		{"{ttl: 1s, vary: [Auth header]}", "Auth header"},
		{"{ttl: 1s, vary: [\"X-A:b\"]}", "X-A:b"},
		{"{ttl: 1s, vary: ['*']}", "*"},
		{"{ttl: 1s, vary: [[a]]}", "header name"},
		{"{ttl: 1s, max_entry_bytes: 0}", "max_entry_bytes"},
		{"{ttl: 1s, max_entry_bytes: -1}", "max_entry_bytes"},
		{"{ttl: 1s, max_entry_bytes: 64k}", "max_entry_bytes"},
		{"{ttl: 1s, max_entry_bytes: 1000000000}", "max_entry_bytes"},
	}
	for _, tt := range invalid {
		_, err := parseCacheConfig(cacheNode(t, tt.yaml))
		if err == nil || !strings.Contains(err.Error(), tt.says) {
			t.Errorf("%q: error %v, want one that says %q", tt.yaml, err, tt.says)
		}
	}
}

// cacheNode is the value of cache: s in a route.
func cacheNode(t *testing.T, s string) *yaml.Node {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte("cache:\n  "+strings.ReplaceAll(s, "\n", "\n  ")), &doc); err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return value(*doc.Content[0], "cache")
}

// Over a real server: an informational answer (103 Early Hints) reaches
// the client with its own headers, which the final answer does not carry.
func TestCache_InformationalAnswersPassWithTheirOwnHeaders(t *testing.T) {
	c := newResponseCache(1<<20, newFakeClock().now)
	next := &countingUpstream{answer: func(_ int32, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Link", "</app.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		clear(w.Header()) // as the reverse proxy does after a 1xx
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("catalog"))
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.serve(w, r, cacheRoute, CacheConfig{TTL: time.Minute}, next)
	}))
	defer srv.Close()

	for _, want := range []string{"MISS", "HIT"} {
		var hints []string
		trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			hints = append(hints, strconv.Itoa(code)+" "+h.Get("Link"))
			return nil
		}}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), http.MethodGet, srv.URL+"/api/products", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if string(body) != "catalog" || resp.Header.Get("X-Cache") != want || resp.Header.Get("Link") != "" {
			t.Fatalf("got %q X-Cache %q Link %q; want catalog, %s, no Link", body, resp.Header.Get("X-Cache"), resp.Header.Get("Link"), want)
		}
		if wantHints := map[string][]string{"MISS": {"103 </app.css>; rel=preload"}}[want]; !slices.Equal(hints, wantHints) {
			t.Errorf("%s: informational answers %q, want %q", want, hints, wantHints)
		}
	}
}

// Around a reverse proxy as the gateway has it: an answer written in parts
// is stored once whole; an event stream is not stored and each flush
// reaches the client at once.
func TestCache_AroundTheReverseProxy(t *testing.T) {
	var calls atomic.Int32
	read := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.URL.Path == "/events" {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = w.Write([]byte("first,"))
			http.NewResponseController(w).Flush()
			<-read // the client has the first part before the rest is written
			_, _ = w.Write([]byte("second"))
			return
		}
		_, _ = w.Write([]byte("first,"))
		http.NewResponseController(w).Flush()
		_, _ = w.Write([]byte("second"))
	}))
	defer up.Close()
	target, err := url.Parse(up.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target); pr.Out.URL.Path = pr.In.URL.Path }}
	c := newResponseCache(1<<20, newFakeClock().now)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.serve(w, r, cacheRoute, CacheConfig{TTL: time.Minute}, proxy)
	}))
	defer srv.Close()

	for _, want := range []string{"MISS", "HIT"} {
		resp, err := srv.Client().Get(srv.URL + "/api/products")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if string(body) != "first,second" || resp.Header.Get("X-Cache") != want {
			t.Fatalf("got %q X-Cache %q, want the whole answer, %s", body, resp.Header.Get("X-Cache"), want)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d upstream calls, want 1", n)
	}

	release := sync.OnceFunc(func() { close(read) })
	defer release()
	var resp *http.Response
	first := make(chan error, 1)
	go func() {
		var err error
		if resp, err = srv.Client().Get(srv.URL + "/events"); err != nil {
			first <- err
			return
		}
		b := make([]byte, len("first,"))
		if _, err := io.ReadFull(resp.Body, b); err != nil || string(b) != "first," {
			first <- fmt.Errorf("first part %q, %v", b, err)
			return
		}
		first <- nil
	}()
	select {
	case err := <-first:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		release()
		<-first
		t.Fatal("the event stream's first part did not reach the client before the rest was written")
	}
	release()
	rest, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if string(rest) != "second" || resp.Header.Get("X-Cache") != "MISS" {
		t.Fatalf("rest %q X-Cache %q", rest, resp.Header.Get("X-Cache"))
	}
}

// A leader whose client reads slowly does not hold the others: they get
// the stored answer as soon as the upstream's is whole.
func TestCache_SlowLeaderDoesNotHoldWaiters(t *testing.T) {
	c := newResponseCache(1<<20, newFakeClock().now)
	cfg := CacheConfig{TTL: time.Minute}
	next := upstreamAnswering()
	unblock := make(chan struct{})
	defer func() {
		select {
		case <-unblock:
		default:
			close(unblock)
		}
	}()
	slow := &blockingWriter{ResponseRecorder: httptest.NewRecorder(), unblock: unblock}
	leaderDone := make(chan struct{})
	go func() {
		defer close(leaderDone)
		c.serve(slow, httptest.NewRequest(http.MethodGet, "/api/products", nil), cacheRoute, cfg, next)
	}()
	// The leader is stuck writing to its client; another caller is answered.
	deadline := time.After(10 * time.Second)
	for next.calls.Load() == 0 { // the leader has called the upstream
		select {
		case <-deadline:
			t.Fatal("the leader never called the upstream")
		case <-time.After(time.Millisecond):
		}
	}
	for {
		w := httptest.NewRecorder()
		done := make(chan struct{})
		go func() {
			defer close(done)
			c.serve(w, httptest.NewRequest(http.MethodGet, "/api/products", nil), cacheRoute, cfg, next)
		}()
		select {
		case <-done:
		case <-deadline:
			t.Fatal("a second caller waited on the slow leader's client")
		}
		if w.Header().Get("X-Cache") == "HIT" && w.Body.String() == "answer 1" {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("second caller: %q %s", w.Header().Get("X-Cache"), w.Body)
		default:
		}
	}
	close(unblock)
	<-leaderDone
	if slow.Body.String() != "answer 1" || next.calls.Load() != 1 {
		t.Fatalf("leader got %q, %d upstream calls", slow.Body.String(), next.calls.Load())
	}
}

// blockingWriter's Write waits until unblock closes: a client that does not read.
type blockingWriter struct {
	*httptest.ResponseRecorder
	unblock chan struct{}
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	<-w.unblock
	return w.ResponseRecorder.Write(p)
}

// A refresh (no-cache) whose answer may not be stored drops the old entry:
// no one is served what the service no longer says.
func TestCache_RefreshThatCannotBeStoredDropsTheEntry(t *testing.T) {
	c := newResponseCache(1<<20, newFakeClock().now)
	cfg := CacheConfig{TTL: time.Minute}
	next := &countingUpstream{answer: func(n int32, w http.ResponseWriter, _ *http.Request) {
		if n > 1 {
			http.Error(w, "gone", http.StatusNotFound)
			return
		}
		fmt.Fprint(w, "answer 1")
	}}
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products/1"), "MISS", "answer 1")
	assertAnswer(t, cacheGet(c, cfg, next, "/api/products/1"), "HIT", "answer 1")
	if w := cacheGet(c, cfg, next, "/api/products/1", "Cache-Control", "no-cache"); w.Code != http.StatusNotFound {
		t.Fatalf("refresh: %d", w.Code)
	}
	if w := cacheGet(c, cfg, next, "/api/products/1"); w.Code != http.StatusNotFound || len(c.keys()) != 0 {
		t.Fatalf("after the refresh: %d %q, %d entries", w.Code, w.Header().Get("X-Cache"), len(c.keys()))
	}
}

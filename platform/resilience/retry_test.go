package resilience_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mercato-shop/mercato/platform/resilience"
)

// Only requests that cannot do twice what they ask for are retried.
func TestRetry_OnlySafeRequests(t *testing.T) {
	cases := []struct {
		name      string
		method    string
		body      string
		key       bool // Idempotency-Key header
		marked    bool // resilience.Idempotent
		streamed  bool // a body that cannot be read twice
		wantTries int
	}{
		{name: "GET", method: http.MethodGet, wantTries: 3},
		{name: "HEAD", method: http.MethodHead, wantTries: 3},
		{name: "OPTIONS", method: http.MethodOptions, wantTries: 3},
		{name: "PUT", method: http.MethodPut, body: `{"n":1}`, wantTries: 3},
		{name: "DELETE", method: http.MethodDelete, wantTries: 3},
		{name: "POST", method: http.MethodPost, body: `{"n":1}`, wantTries: 1},
		{name: "PATCH", method: http.MethodPatch, body: `{"n":1}`, wantTries: 1},
		{name: "POST with an idempotency key", method: http.MethodPost, body: `{"n":1}`, key: true, wantTries: 3},
		{name: "POST marked idempotent", method: http.MethodPost, body: `{"n":1}`, marked: true, wantTries: 3},
		{name: "POST with a key and a streamed body", method: http.MethodPost, body: `{"n":1}`, key: true, streamed: true, wantTries: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dep := newUpstream(t, http.StatusServiceUnavailable)
			p := newPolicies(t, nil, nil)
			c := client(t, func(rt http.RoundTripper) http.RoundTripper { return p.Transport("inventory", rt) })
			ctx := context.Background()
			if tc.marked {
				ctx = resilience.Idempotent(ctx)
			}
			req := newRequest(t, ctx, tc.method, dep.URL, tc.body)
			if tc.key {
				req.Header.Set(resilience.IdempotencyKeyHeader, "k-1")
			}
			if tc.streamed {
				req.Body, req.GetBody = io.NopCloser(strings.NewReader(tc.body)), nil
			}
			code, _, err := do(t, c, req)
			if err != nil || code != http.StatusServiceUnavailable {
				t.Fatalf("%d %v, want the last 503", code, err)
			}
			if h := dep.Hits(); h != tc.wantTries {
				t.Fatalf("upstream hits %d, want %d", h, tc.wantTries)
			}
			if s := status(t, p, "inventory"); s.Counts.Retries != uint64(tc.wantTries-1) || s.Counts.Calls != 1 {
				t.Fatalf("counts %+v", s.Counts)
			}
		})
	}
}

// A retried request is sent again whole, and the caller gets the answer of
// the attempt that worked.
func TestRetry_ReplaysBodyUntilAnAttemptWorks(t *testing.T) {
	for _, code := range []int{http.StatusServiceUnavailable, http.StatusTooManyRequests, http.StatusInternalServerError} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			dep := newUpstream(t, code, code, http.StatusOK)
			p := newPolicies(t, nil, nil)
			c := client(t, func(rt http.RoundTripper) http.RoundTripper { return p.Transport("inventory", rt) })
			req := newRequest(t, context.Background(), http.MethodPut, dep.URL, `{"sku":"A-1","qty":2}`)
			status, body, err := do(t, c, req)
			if err != nil || status != http.StatusOK || body != "answer OK" {
				t.Fatalf("%d %q %v", status, body, err)
			}
			dep.mu.Lock()
			defer dep.mu.Unlock()
			if len(dep.bodies) != 3 {
				t.Fatalf("bodies %q", dep.bodies)
			}
			for i, b := range dep.bodies {
				if b != `{"sku":"A-1","qty":2}` {
					t.Fatalf("attempt %d sent %q", i+1, b)
				}
			}
		})
	}
}

// charges is a provider that captures money, then loses its answer (503)
// the first time: the caller cannot know whether it was charged. It
// deduplicates by Idempotency-Key, as a payment provider does.
type charges struct {
	mu       sync.Mutex
	attempts int
	captured int
	keys     map[string]bool
}

func (c *charges) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.attempts++
	key := r.Header.Get(resilience.IdempotencyKeyHeader)
	if key == "" || !c.keys[key] {
		c.captured++
		if key != "" {
			c.keys[key] = true
		}
	}
	if c.attempts == 1 {
		w.WriteHeader(http.StatusServiceUnavailable) // charged, but the answer is lost
		return
	}
	w.WriteHeader(http.StatusCreated)
}

func (c *charges) counts() (attempts, captured int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.attempts, c.captured
}

func TestRetry_NeverDuplicatesACharge(t *testing.T) {
	t.Run("without a key: sent once", func(t *testing.T) {
		psp := &charges{keys: map[string]bool{}}
		srv := newServer(t, psp)
		p := newPolicies(t, nil, nil)
		c := client(t, func(rt http.RoundTripper) http.RoundTripper { return p.Transport("payment-provider", rt) })
		code, _, err := do(t, c, newRequest(t, context.Background(), http.MethodPost, srv+"/v1/charges", `{"amount":"12.34"}`))
		if err != nil || code != http.StatusServiceUnavailable {
			t.Fatalf("%d %v: want the 503, for the caller to decide", code, err)
		}
		if attempts, captured := psp.counts(); attempts != 1 || captured != 1 {
			t.Fatalf("attempts %d, captured %d: want 1 and 1", attempts, captured)
		}
	})
	t.Run("with a key: retried, charged once", func(t *testing.T) {
		psp := &charges{keys: map[string]bool{}}
		srv := newServer(t, psp)
		p := newPolicies(t, nil, nil)
		c := client(t, func(rt http.RoundTripper) http.RoundTripper { return p.Transport("payment-provider", rt) })
		req := newRequest(t, context.Background(), http.MethodPost, srv+"/v1/charges", `{"amount":"12.34"}`)
		req.Header.Set(resilience.IdempotencyKeyHeader, "pay-42")
		code, _, err := do(t, c, req)
		if err != nil || code != http.StatusCreated {
			t.Fatalf("%d %v", code, err)
		}
		if attempts, captured := psp.counts(); attempts != 2 || captured != 1 {
			t.Fatalf("attempts %d, captured %d: want 2 and 1", attempts, captured)
		}
	})
}

// A retry is not started when the caller's deadline is nearer than the
// next attempt's delay plus its timeout.
func TestRetry_NotStartedPastTheCallersDeadline(t *testing.T) {
	cases := []struct {
		name      string
		delay     time.Duration // backoff, without jitter
		timeout   time.Duration
		deadline  time.Duration // 0: none
		wantTries int
	}{
		{"the delay alone is too long", 10 * time.Second, time.Second, 5 * time.Second, 1},
		{"delay and timeout are too long", time.Millisecond, 10 * time.Second, 5 * time.Second, 1},
		{"time enough", time.Millisecond, time.Second, time.Minute, 3},
		{"no deadline", time.Millisecond, time.Second, 0, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dep := newUpstream(t, http.StatusServiceUnavailable)
			pol := quick()
			pol.Timeout = tc.timeout
			pol.Retry.Backoff = resilience.Backoff{Initial: tc.delay, Max: tc.delay}
			p := newPolicies(t, nil, map[string]resilience.Policy{"inventory": pol})
			c := client(t, func(rt http.RoundTripper) http.RoundTripper { return p.Transport("inventory", rt) })
			ctx := context.Background()
			if tc.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.deadline)
				defer cancel()
			}
			code, body, err := do(t, c, newRequest(t, ctx, http.MethodGet, dep.URL, ""))
			if err != nil || code != http.StatusServiceUnavailable || body != "answer Service Unavailable" {
				t.Fatalf("%d %q %v, want the last attempt's answer", code, body, err)
			}
			if h := dep.Hits(); h != tc.wantTries {
				t.Fatalf("upstream hits %d, want %d", h, tc.wantTries)
			}
			s := status(t, p, "inventory")
			if skipped := uint64(min(1, 3-tc.wantTries)); s.Counts.RetriesSkipped != skipped || s.Counts.Retries != uint64(tc.wantTries-1) {
				t.Fatalf("counts %+v", s.Counts)
			}
		})
	}
}

// However long the attempt timeout, the call ends by the caller's
// deadline, and the target sees the request canceled.
func TestRetry_CallEndsByTheCallersDeadline(t *testing.T) {
	dep := newUpstream(t)
	release := dep.holdRequests()
	defer release()
	pol := quick()
	pol.Timeout = time.Hour
	p := newPolicies(t, nil, map[string]resilience.Policy{"inventory": pol})
	c := client(t, func(rt http.RoundTripper) http.RoundTripper { return p.Transport("inventory", rt) })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()

	_, _, err := do(t, c, newRequest(t, ctx, http.MethodGet, dep.URL, ""))
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, resilience.ErrTimeout) {
		t.Fatalf("err %v, want the caller's deadline", err)
	}
	checkFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if _, _, canceled := dep.stats(); canceled != 1 {
			return errors.New("the upstream did not see the request canceled")
		}
		return nil
	})
	s := status(t, p, "inventory")
	if dep.Hits() != 1 || s.Counts.Failures != 0 {
		t.Fatalf("hits %d, counts %+v: want one attempt, not held against the target", dep.Hits(), s.Counts)
	}
}

// The attempt timeout ends a slow attempt; it counts as a failure and is
// retried.
func TestTimeout_EndsSlowAttempts(t *testing.T) {
	dep := newUpstream(t)
	release := dep.holdRequests()
	defer release()
	pol := quick()
	pol.Timeout = 20 * time.Millisecond
	pol.Retry.MaxAttempts = 2
	p := newPolicies(t, nil, map[string]resilience.Policy{"inventory": pol})
	c := client(t, func(rt http.RoundTripper) http.RoundTripper { return p.Transport("inventory", rt) })

	_, _, err := do(t, c, newRequest(t, context.Background(), http.MethodGet, dep.URL, ""))
	if !errors.Is(err, resilience.ErrTimeout) || !strings.Contains(err.Error(), "inventory") {
		t.Fatalf("err %v, want ErrTimeout naming the target", err)
	}
	checkFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if _, _, canceled := dep.stats(); canceled != 2 {
			return errors.New("the upstream did not see both attempts canceled")
		}
		return nil
	})
	s := status(t, p, "inventory")
	if dep.Hits() != 2 || s.Counts.Timeouts != 2 || s.Counts.Failures != 2 || s.Window.Failures != 2 {
		t.Fatalf("hits %d, status %+v", dep.Hits(), s)
	}
}

// The timeout covers the wait for the answer, not the reading of its body:
// the attempt's context outlives the attempt until the body is closed.
func TestTimeout_LeavesTheBodyReadable(t *testing.T) {
	ready := make(chan struct{})
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "first part, ")
		w.(http.Flusher).Flush()
		select {
		case <-ready:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "second part")
	}))
	p := newPolicies(t, nil, nil)
	c := client(t, func(rt http.RoundTripper) http.RoundTripper { return p.Transport("inventory", rt) })
	resp, err := c.Do(newRequest(t, context.Background(), http.MethodGet, srv, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	close(ready)
	b, err := io.ReadAll(resp.Body)
	if err != nil || string(b) != "first part, second part" {
		t.Fatalf("body %q, err %v", b, err)
	}
}

// Connect tells the server the caller's deadline; each attempt tells it the
// budget of that attempt instead, never more than what the caller has left.
func TestTimeout_AttemptBudgetSentToConnectServers(t *testing.T) {
	dep := newUpstream(t, http.StatusServiceUnavailable, http.StatusOK)
	pol := quick()
	pol.Timeout = 2 * time.Second
	p := newPolicies(t, nil, map[string]resilience.Policy{"inventory": pol})
	c := client(t, func(rt http.RoundTripper) http.RoundTripper { return p.Transport("inventory", rt) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req := newRequest(t, resilience.Idempotent(ctx), http.MethodPost, dep.URL, `{}`)
	req.Header.Set("Connect-Timeout-Ms", "60000")
	if code, _, err := do(t, c, req); err != nil || code != http.StatusOK {
		t.Fatalf("%d %v", code, err)
	}
	dep.mu.Lock()
	defer dep.mu.Unlock()
	if len(dep.headers) != 2 {
		t.Fatalf("%d attempts, want 2", len(dep.headers))
	}
	for i, h := range dep.headers {
		ms, err := strconv.Atoi(h.Get("Connect-Timeout-Ms"))
		if err != nil || ms <= 0 || ms > 2000 {
			t.Fatalf("attempt %d: Connect-Timeout-Ms %q, want 1..2000 (the attempt timeout)", i+1, h.Get("Connect-Timeout-Ms"))
		}
	}

	// A plain HTTP request gets no such header.
	plain := newUpstream(t)
	if _, _, err := do(t, c, newRequest(t, ctx, http.MethodGet, plain.URL, "")); err != nil {
		t.Fatal(err)
	}
	plain.mu.Lock()
	defer plain.mu.Unlock()
	if v := plain.headers[0].Get("Connect-Timeout-Ms"); v != "" {
		t.Fatalf("Connect-Timeout-Ms %q added to a plain request", v)
	}
}

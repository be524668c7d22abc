package resilience_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mercato-shop/mercato/platform/resilience"
)

// The provider fails every call: the breaker opens at its threshold, and
// from then on calls fail fast with ErrOpen without reaching it.
func TestBreaker_OpensAtThresholdThenFailsFastWithoutReachingUpstream(t *testing.T) {
	provider := newUpstream(t, http.StatusServiceUnavailable)
	pol := quick()
	pol.Retry.MaxAttempts = 1
	pol.CircuitBreaker = resilience.CircuitBreaker{FailureThreshold: 3, Delay: time.Hour, SuccessThreshold: 1}
	logs := &records{}
	p := newPolicies(t, slog.New(logs), map[string]resilience.Policy{"payment-provider": pol})
	c := client(t, func(rt http.RoundTripper) http.RoundTripper { return p.Transport("payment-provider", rt) })
	ctx := context.Background()

	for i := 1; i <= 3; i++ {
		code, _, err := do(t, c, newRequest(t, ctx, http.MethodGet, provider.URL, ""))
		if err != nil || code != http.StatusServiceUnavailable {
			t.Fatalf("call %d: %d %v, want the provider's 503", i, code, err)
		}
		want := "closed"
		if i == 3 {
			want = "open"
		}
		if s := status(t, p, "payment-provider"); s.State != want {
			t.Fatalf("after %d failures: state %s, want %s", i, s.State, want)
		}
	}
	for i := range 5 {
		_, _, err := do(t, c, newRequest(t, ctx, http.MethodGet, provider.URL, ""))
		if !errors.Is(err, resilience.ErrOpen) {
			t.Fatalf("call %d while open: err %v, want ErrOpen", i, err)
		}
		if !strings.Contains(err.Error(), "payment-provider") {
			t.Fatalf("err %q does not name the target", err)
		}
	}
	if h := provider.Hits(); h != 3 {
		t.Fatalf("provider hits %d, want 3: no call may reach it while the breaker is open", h)
	}
	s := status(t, p, "payment-provider")
	if s.Counts.RejectedOpen != 5 || s.Counts.Opened != 1 || s.Counts.Failures != 3 || s.Counts.Attempts != 3 || s.Counts.Calls != 8 {
		t.Fatalf("counts %+v", s.Counts)
	}
	changes := logs.find("circuit breaker state changed")
	if len(changes) != 1 || changes[0]["target"] != "payment-provider" || changes[0]["from"] != "closed" ||
		changes[0]["to"] != "open" || changes[0]["level"] != "WARN" {
		t.Fatalf("state change logs %v", changes)
	}
}

// A call retried on failure counts each attempt: one call can open the
// breaker, and its next attempt is not sent.
func TestBreaker_RetriesStopWhenItOpens(t *testing.T) {
	provider := newUpstream(t, http.StatusInternalServerError)
	pol := quick()
	pol.Retry.MaxAttempts = 5
	pol.CircuitBreaker.FailureThreshold = 2
	p := newPolicies(t, nil, map[string]resilience.Policy{"payment-provider": pol})
	c := client(t, func(rt http.RoundTripper) http.RoundTripper { return p.Transport("payment-provider", rt) })

	req := newRequest(t, context.Background(), http.MethodPost, provider.URL, `{"amount":"12.34"}`)
	req.Header.Set(resilience.IdempotencyKeyHeader, "pay-1")
	_, _, err := do(t, c, req)
	if !errors.Is(err, resilience.ErrOpen) {
		t.Fatalf("err %v, want ErrOpen once the breaker opened", err)
	}
	if h := provider.Hits(); h != 2 {
		t.Fatalf("provider hits %d, want 2 (the threshold)", h)
	}
}

// After the fault clears, the first call past the open delay is the
// half-open probe; its success closes the breaker. Calls before it fail
// fast.
func TestBreaker_HalfOpenProbeClosesItAfterFaultClears(t *testing.T) {
	provider := newUpstream(t, http.StatusBadGateway)
	pol := quick()
	pol.Retry.MaxAttempts = 1
	pol.CircuitBreaker = resilience.CircuitBreaker{FailureThreshold: 2, Delay: 20 * time.Millisecond, SuccessThreshold: 1}
	logs := &records{}
	p := newPolicies(t, slog.New(logs), map[string]resilience.Policy{"payment-provider": pol})
	c := client(t, func(rt http.RoundTripper) http.RoundTripper { return p.Transport("payment-provider", rt) })
	ctx := context.Background()

	for range 2 {
		if code, _, err := do(t, c, newRequest(t, ctx, http.MethodGet, provider.URL, "")); err != nil || code != http.StatusBadGateway {
			t.Fatalf("%d %v", code, err)
		}
	}
	if s := status(t, p, "payment-provider"); s.State != "open" {
		t.Fatalf("state %s, want open", s.State)
	}

	provider.answer(http.StatusOK)
	before := provider.Hits()
	failedFast := 0
	checkFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		code, _, err := do(t, c, newRequest(t, ctx, http.MethodGet, provider.URL, ""))
		switch {
		case errors.Is(err, resilience.ErrOpen):
			failedFast++
			return errors.New("the breaker is still open")
		case err != nil || code != http.StatusOK:
			t.Fatalf("probe: %d %v", code, err)
		}
		return nil
	})
	if h := provider.Hits() - before; h != 1 {
		t.Fatalf("%d calls reached the provider after the fault cleared, want 1 (the probe); %d failed fast", h, failedFast)
	}
	s := status(t, p, "payment-provider")
	if s.State != "closed" || s.Counts.Opened != 1 || s.Counts.HalfOpened != 1 || s.Counts.Closed != 1 {
		t.Fatalf("status %+v, want closed after open and half-open once", s)
	}
	if s.Counts.RejectedOpen != uint64(failedFast) {
		t.Fatalf("rejected_open %d, want %d", s.Counts.RejectedOpen, failedFast)
	}
	var path []string
	for _, r := range logs.find("circuit breaker state changed") {
		path = append(path, r["from"]+">"+r["to"])
	}
	if got := strings.Join(path, " "); got != "closed>open open>half-open half-open>closed" {
		t.Fatalf("logged state changes %q", got)
	}

	// Closed again: calls go through.
	if code, _, err := do(t, c, newRequest(t, ctx, http.MethodGet, provider.URL, "")); err != nil || code != http.StatusOK {
		t.Fatalf("after closing: %d %v", code, err)
	}
}

// A probe that fails opens the breaker again.
func TestBreaker_FailedProbeOpensItAgain(t *testing.T) {
	provider := newUpstream(t, http.StatusServiceUnavailable)
	pol := quick()
	pol.Retry.MaxAttempts = 1
	pol.CircuitBreaker = resilience.CircuitBreaker{FailureThreshold: 1, Delay: 20 * time.Millisecond, SuccessThreshold: 1}
	p := newPolicies(t, nil, map[string]resilience.Policy{"payment-provider": pol})
	c := client(t, func(rt http.RoundTripper) http.RoundTripper { return p.Transport("payment-provider", rt) })
	ctx := context.Background()

	if code, _, _ := do(t, c, newRequest(t, ctx, http.MethodGet, provider.URL, "")); code != http.StatusServiceUnavailable {
		t.Fatalf("first call %d", code)
	}
	checkFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		_, _, err := do(t, c, newRequest(t, ctx, http.MethodGet, provider.URL, ""))
		if errors.Is(err, resilience.ErrOpen) {
			return err
		}
		return nil // the probe went through, and failed
	})
	s := status(t, p, "payment-provider")
	if s.State != "open" || s.Counts.Opened != 2 || s.Counts.HalfOpened != 1 || s.Counts.Closed != 0 || provider.Hits() != 2 {
		t.Fatalf("status %+v, hits %d: want open again after one failed probe", s, provider.Hits())
	}
}

// Ratio mode: the breaker waits for min_calls, then opens when the share
// of failures reaches failure_ratio.
func TestBreaker_RatioOpensAtShareOfFailures(t *testing.T) {
	dep := newUpstream(t, http.StatusOK, http.StatusOK, http.StatusServiceUnavailable, http.StatusServiceUnavailable)
	pol := quick()
	pol.Retry.MaxAttempts = 1
	pol.CircuitBreaker = resilience.CircuitBreaker{FailureRatio: 0.5, Window: time.Hour, MinCalls: 4, Delay: time.Hour, SuccessThreshold: 1}
	p := newPolicies(t, nil, map[string]resilience.Policy{"inventory": pol})
	c := client(t, func(rt http.RoundTripper) http.RoundTripper { return p.Transport("inventory", rt) })

	for i, want := range []string{"closed", "closed", "closed", "open"} {
		if _, _, err := do(t, c, newRequest(t, context.Background(), http.MethodGet, dep.URL, "")); err != nil {
			t.Fatal(err)
		}
		if s := status(t, p, "inventory"); s.State != want {
			t.Fatalf("after call %d: %+v, want %s", i+1, s, want)
		}
	}
}

// Only the target's failures count: transport errors, timeouts, 5xx but
// 501, and 429. Answers about the request itself do not, nor does a caller
// that gives up.
func TestBreaker_CountsOnlyTheTargetsFailures(t *testing.T) {
	cases := []struct {
		status int
		failed bool
	}{
		{http.StatusOK, false},
		{http.StatusBadRequest, false},
		{http.StatusNotFound, false},
		{http.StatusConflict, false},
		{http.StatusUnprocessableEntity, false},
		{http.StatusNotImplemented, false},
		{http.StatusTooManyRequests, true},
		{http.StatusInternalServerError, true},
		{http.StatusBadGateway, true},
		{http.StatusServiceUnavailable, true},
		{http.StatusGatewayTimeout, true},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			dep := newUpstream(t, tc.status)
			pol := quick()
			pol.Retry.MaxAttempts = 1
			p := newPolicies(t, nil, map[string]resilience.Policy{"order": pol})
			c := client(t, func(rt http.RoundTripper) http.RoundTripper { return p.Transport("order", rt) })
			if code, _, err := do(t, c, newRequest(t, context.Background(), http.MethodGet, dep.URL, "")); err != nil || code != tc.status {
				t.Fatalf("%d %v", code, err)
			}
			s := status(t, p, "order")
			if want := map[bool]uint{true: 1}[tc.failed]; s.Window.Failures != want || s.Counts.Failures != uint64(want) {
				t.Fatalf("failures %d (window %d), want %d", s.Counts.Failures, s.Window.Failures, want)
			}
		})
	}

	t.Run("transport error", func(t *testing.T) {
		gone := newUpstream(t)
		gone.Close()
		p := newPolicies(t, nil, nil)
		c := client(t, func(rt http.RoundTripper) http.RoundTripper { return p.Transport("order", rt) })
		if _, _, err := do(t, c, newRequest(t, context.Background(), http.MethodGet, gone.URL, "")); err == nil {
			t.Fatal("a closed server answered")
		}
		if s := status(t, p, "order"); s.Counts.Failures != 3 || s.Counts.Attempts != 3 {
			t.Fatalf("counts %+v, want 3 failed attempts", s.Counts)
		}
	})

	t.Run("caller cancels", func(t *testing.T) {
		dep := newUpstream(t)
		release := dep.holdRequests()
		defer release()
		p := newPolicies(t, nil, nil)
		c := client(t, func(rt http.RoundTripper) http.RoundTripper { return p.Transport("order", rt) })
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			dep.waitEntered(1)
			cancel()
		}()
		if _, _, err := do(t, c, newRequest(t, ctx, http.MethodGet, dep.URL, "")); !errors.Is(err, context.Canceled) {
			t.Fatalf("err %v, want context.Canceled", err)
		}
		if s := status(t, p, "order"); s.Counts.Failures != 0 || s.Counts.Attempts != 1 {
			t.Fatalf("counts %+v: a caller that gives up is not the target's failure, nor retried", s.Counts)
		}
	})
}

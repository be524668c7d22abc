package resilience_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/mercato-shop/mercato/platform/resilience"
	"github.com/mercato-shop/mercato/platform/web"
)

// result is the outcome of a call made on another goroutine.
type result struct {
	status int
	err    error
}

func goCall(c *http.Client, url string, out chan<- result) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		out <- result{err: err}
		return
	}
	resp, err := c.Do(req)
	if err != nil {
		out <- result{err: err}
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	out <- result{status: resp.StatusCode}
}

func receive(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("a call did not end")
		return result{}
	}
}

// A dependency that hangs holds at most max_concurrent calls; the calls
// beyond fail fast, and calls to another dependency go on.
func TestBulkhead_SlowTargetDoesNotStarveAnother(t *testing.T) {
	slow, fast := newUpstream(t), newUpstream(t)
	release := slow.holdRequests()
	defer release()
	pol := quick()
	pol.Bulkhead = resilience.Bulkhead{MaxConcurrent: 2, MaxWait: 0}
	p := newPolicies(t, nil, map[string]resilience.Policy{"order": pol, "inventory": quick()})
	toSlow := client(t, func(rt http.RoundTripper) http.RoundTripper { return p.Transport("order", rt) })
	toFast := client(t, func(rt http.RoundTripper) http.RoundTripper { return p.Transport("inventory", rt) })

	results := make(chan result, 5)
	for range 5 {
		go goCall(toSlow, slow.URL, results)
	}
	slow.waitEntered(2)
	for range 3 {
		if r := receive(t, results); !errors.Is(r.err, resilience.ErrFull) {
			t.Fatalf("call beyond the bulkhead: %+v, want ErrFull", r)
		}
	}
	// The slow dependency holds two calls; the other one answers.
	fastResults := make(chan result, 4)
	for range 4 {
		go goCall(toFast, fast.URL, fastResults)
	}
	for range 4 {
		if r := receive(t, fastResults); r.err != nil || r.status != http.StatusOK {
			t.Fatalf("call to the other dependency: %+v", r)
		}
	}

	release()
	for range 2 {
		if r := receive(t, results); r.err != nil || r.status != http.StatusOK {
			t.Fatalf("held call: %+v", r)
		}
	}
	hits, maxInFlight, _ := slow.stats()
	if hits != 2 || maxInFlight != 2 {
		t.Fatalf("slow dependency: %d hits, %d at once; want 2 and 2", hits, maxInFlight)
	}
	s := status(t, p, "order")
	if s.Counts.RejectedFull != 3 || s.Counts.Attempts != 2 || s.Counts.Retries != 0 || s.Window.Failures != 0 {
		t.Fatalf("status %+v: rejections are neither retried nor held against the target", s)
	}
}

// A call waits up to max_wait for a slot to free.
func TestBulkhead_CallWaitsForAFreeSlot(t *testing.T) {
	dep := newUpstream(t)
	release := dep.holdRequests()
	defer release()
	pol := quick()
	pol.Bulkhead = resilience.Bulkhead{MaxConcurrent: 1, MaxWait: time.Minute}
	p := newPolicies(t, nil, map[string]resilience.Policy{"inventory": pol})
	c := client(t, func(rt http.RoundTripper) http.RoundTripper { return p.Transport("inventory", rt) })

	results := make(chan result, 2)
	go goCall(c, dep.URL, results)
	dep.waitEntered(1)
	go goCall(c, dep.URL, results)
	checkFor(t, 5*time.Second, 2*time.Millisecond, func() error {
		if s := status(t, p, "inventory"); s.Counts.Calls != 2 || s.Counts.Attempts != 1 {
			return fmt.Errorf("counts %+v: want the second call waiting", s.Counts)
		}
		return nil
	})
	release()
	for range 2 {
		if r := receive(t, results); r.err != nil || r.status != http.StatusOK {
			t.Fatalf("%+v", r)
		}
	}
	if hits, maxInFlight, _ := dep.stats(); hits != 2 || maxInFlight != 1 {
		t.Fatalf("%d hits, %d at once; want 2 and 1", hits, maxInFlight)
	}
}

// trackedBody remembers whether it was closed.
type trackedBody struct {
	io.ReadCloser
	closed atomic.Bool
}

func (b *trackedBody) Close() error {
	b.closed.Store(true)
	return b.ReadCloser.Close()
}

// tracking wraps the responses of next in trackedBody.
type tracking struct {
	next   http.RoundTripper
	mu     sync.Mutex
	bodies []*trackedBody
}

func (tr *tracking) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := tr.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	b := &trackedBody{ReadCloser: resp.Body}
	resp.Body = b
	tr.mu.Lock()
	tr.bodies = append(tr.bodies, b)
	tr.mu.Unlock()
	return resp, nil
}

// The answers of failed attempts are closed (their connections go back to
// the pool); the caller closes the one it gets.
func TestTransport_ClosesTheAnswersItDrops(t *testing.T) {
	dep := newUpstream(t, http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusOK)
	p := newPolicies(t, nil, nil)
	tr := &tracking{next: &http.Transport{}}
	c := &http.Client{Transport: p.Transport("inventory", tr)}

	resp, err := c.Do(newRequest(t, context.Background(), http.MethodGet, dep.URL, ""))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%v %v", resp, err)
	}
	tr.mu.Lock()
	bodies := tr.bodies
	tr.mu.Unlock()
	if len(bodies) != 3 || !bodies[0].closed.Load() || !bodies[1].closed.Load() || bodies[2].closed.Load() {
		t.Fatalf("want the 2 dropped answers closed and the last open: %d answers", len(bodies))
	}
	resp.Body.Close()
	if !bodies[2].closed.Load() {
		t.Fatal("closing the answer did not close the underlying body")
	}
}

// closeTracker is a request body that remembers whether it was closed.
type closeTracker struct {
	io.Reader
	closed atomic.Bool
}

func (c *closeTracker) Close() error {
	c.closed.Store(true)
	return nil
}

// A RoundTripper closes the request body even when it sends nothing.
func TestTransport_ClosesARequestBodyItDoesNotSend(t *testing.T) {
	dep := newUpstream(t, http.StatusServiceUnavailable)
	pol := quick()
	pol.Retry.MaxAttempts = 1
	pol.CircuitBreaker.FailureThreshold = 1
	p := newPolicies(t, nil, map[string]resilience.Policy{"payment-provider": pol})
	c := client(t, func(rt http.RoundTripper) http.RoundTripper { return p.Transport("payment-provider", rt) })
	if _, _, err := do(t, c, newRequest(t, context.Background(), http.MethodGet, dep.URL, "")); err != nil {
		t.Fatal(err)
	}

	body := &closeTracker{Reader: strings.NewReader(`{"amount":"1.00"}`)}
	req, err := http.NewRequest(http.MethodPost, dep.URL, body)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := do(t, c, req); !errors.Is(err, resilience.ErrOpen) {
		t.Fatalf("err %v, want ErrOpen", err)
	}
	if !body.closed.Load() {
		t.Fatal("the request body was left open")
	}
}

// ServiceTransport reads the target from the host (a service name), so
// each service has its own breaker; addresses pass through unguarded.
func TestServiceTransport_TargetIsTheServiceName(t *testing.T) {
	inventory := newUpstream(t, http.StatusServiceUnavailable)
	order := newUpstream(t)
	catalog := newUpstream(t)
	addrs := map[string]string{}
	for name, u := range map[string]*upstream{"inventory": inventory, "order": order, "catalog": catalog} {
		addrs[name] = strings.TrimPrefix(u.URL, "http://")
	}
	pol := quick()
	pol.Retry.MaxAttempts = 1
	pol.CircuitBreaker.FailureThreshold = 1
	p := newPolicies(t, nil, map[string]resilience.Policy{"inventory": pol, "order": pol})
	// resolve stands for discovery.Transport, below the policies.
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	resolve := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		out := req.Clone(req.Context())
		if addr, ok := addrs[req.URL.Host]; ok {
			out.URL.Host, out.Host = addr, ""
		}
		return base.RoundTrip(out)
	})
	c := &http.Client{Transport: p.ServiceTransport(resolve)}
	ctx := context.Background()

	if code, _, err := do(t, c, newRequest(t, ctx, http.MethodGet, "http://inventory/api/products", "")); err != nil || code != http.StatusServiceUnavailable {
		t.Fatalf("%d %v", code, err)
	}
	if _, _, err := do(t, c, newRequest(t, ctx, http.MethodGet, "http://inventory/api/products", "")); !errors.Is(err, resilience.ErrOpen) {
		t.Fatalf("err %v: want inventory's breaker open", err)
	}
	if code, _, err := do(t, c, newRequest(t, ctx, http.MethodGet, "http://order/api/orders/1", "")); err != nil || code != http.StatusOK {
		t.Fatalf("order: %d %v: another service's breaker must not matter", code, err)
	}
	// A service the file does not name gets the defaults.
	if code, _, err := do(t, c, newRequest(t, ctx, http.MethodGet, "http://catalog/", "")); err != nil || code != http.StatusOK {
		t.Fatalf("catalog: %d %v", code, err)
	}
	if got := p.Policy("catalog"); got.CircuitBreaker != quick().CircuitBreaker || got.Retry != quick().Retry {
		t.Fatalf("catalog policy %+v, want the defaults", got)
	}
	// An address is not a service: passed through, not counted.
	if code, _, err := do(t, c, newRequest(t, ctx, http.MethodGet, order.URL, "")); err != nil || code != http.StatusOK {
		t.Fatalf("by address: %d %v", code, err)
	}

	var got []string
	for _, s := range p.Breakers() {
		got = append(got, fmt.Sprintf("%s:%s:%d", s.Target, s.State, s.Counts.Calls))
	}
	if want := "catalog:closed:1 inventory:open:2 order:closed:1"; strings.Join(got, " ") != want {
		t.Fatalf("breakers %q, want %q", strings.Join(got, " "), want)
	}
}

// Targets built on first use are built once, whoever calls first.
func TestServiceTransport_ConcurrentFirstCalls(t *testing.T) {
	dep := newUpstream(t)
	p := newPolicies(t, nil, nil)
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	addr := strings.TrimPrefix(dep.URL, "http://")
	resolve := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		out := req.Clone(req.Context())
		out.URL.Host, out.Host = addr, ""
		return base.RoundTrip(out)
	})
	c := &http.Client{Transport: p.ServiceTransport(resolve)}
	results := make(chan result, 40)
	for i := range 40 {
		go goCall(c, fmt.Sprintf("http://svc-%d/", i%4), results)
	}
	for range 40 {
		if r := receive(t, results); r.err != nil {
			t.Fatal(r.err)
		}
	}
	bs := p.Breakers()
	if len(bs) != 4 {
		t.Fatalf("%d targets, want 4", len(bs))
	}
	for _, s := range bs {
		if s.Counts.Calls != 10 {
			t.Fatalf("%s: %d calls, want 10", s.Target, s.Counts.Calls)
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestHandler_ListsBreakers(t *testing.T) {
	dep := newUpstream(t, http.StatusServiceUnavailable)
	pol := quick()
	pol.Retry.MaxAttempts = 1
	pol.CircuitBreaker.FailureThreshold = 1
	p := newPolicies(t, nil, map[string]resilience.Policy{"payment-provider": pol, "inventory": quick()})
	c := client(t, func(rt http.RoundTripper) http.RoundTripper { return p.Transport("payment-provider", rt) })
	if _, _, err := do(t, c, newRequest(t, context.Background(), http.MethodGet, dep.URL, "")); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/admin/breakers", p.Handler())

	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/admin/breakers", nil))
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("%d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	var got struct {
		Breakers []struct {
			Target string         `json:"target"`
			State  string         `json:"state"`
			Window map[string]int `json:"window"`
			Counts map[string]int `json:"counts"`
		} `json:"breakers"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Breakers) != 2 || got.Breakers[0].Target != "inventory" || got.Breakers[0].State != "closed" ||
		got.Breakers[1].Target != "payment-provider" || got.Breakers[1].State != "open" {
		t.Fatalf("breakers %+v", got.Breakers)
	}
	pp := got.Breakers[1]
	if pp.Window["failures"] != 1 || pp.Counts["failures"] != 1 || pp.Counts["opened"] != 1 || pp.Counts["attempts"] != 1 {
		t.Fatalf("payment-provider %+v", pp)
	}

	for _, tc := range []struct {
		method, target string
		want           int
	}{
		{http.MethodPost, "/admin/breakers", http.StatusMethodNotAllowed},
		{http.MethodGet, "/admin/breakers?state=open", http.StatusBadRequest},
	} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.target, nil))
		if rec.Code != tc.want || rec.Header().Get("Content-Type") != web.ProblemContentType {
			t.Fatalf("%s %s: %d %q, want %d as a problem", tc.method, tc.target, rec.Code, rec.Header().Get("Content-Type"), tc.want)
		}
	}
}

// Connect sends unary calls as POST: they are retried when the caller
// marks them idempotent, and Connect's body is sent again whole.
func TestConnect_UnaryCallsRetriedOnlyWhenMarked(t *testing.T) {
	var (
		mu       sync.Mutex
		payloads []string
		seen     = map[string]bool{}
		budgets  []bool // the server's deadline was within the attempt timeout
	)
	h := connect.NewUnaryHandler("/test.v1.Echo/Say",
		func(ctx context.Context, req *connect.Request[wrapperspb.StringValue]) (*connect.Response[wrapperspb.StringValue], error) {
			mu.Lock()
			defer mu.Unlock()
			payloads = append(payloads, req.Msg.GetValue())
			dl, ok := ctx.Deadline()
			budgets = append(budgets, ok && time.Until(dl) <= 2*time.Second)
			if !seen[req.Msg.GetValue()] { // the first attempt of each call fails
				seen[req.Msg.GetValue()] = true
				return nil, connect.NewError(connect.CodeUnavailable, errors.New("warming up"))
			}
			return connect.NewResponse(wrapperspb.String("echo " + req.Msg.GetValue())), nil
		})
	mux := http.NewServeMux()
	mux.Handle("/test.v1.Echo/Say", h)
	srv := newServer(t, mux)
	pol := quick()
	pol.Timeout = 2 * time.Second
	p := newPolicies(t, nil, map[string]resilience.Policy{"inventory": pol})
	hc := client(t, func(rt http.RoundTripper) http.RoundTripper { return p.Transport("inventory", rt) })
	echo := connect.NewClient[wrapperspb.StringValue, wrapperspb.StringValue](hc, srv+"/test.v1.Echo/Say")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	_, err := echo.CallUnary(ctx, connect.NewRequest(wrapperspb.String("once")))
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("unmarked call: %v, want Unavailable without a retry", err)
	}
	res, err := echo.CallUnary(resilience.Idempotent(ctx), connect.NewRequest(wrapperspb.String("twice")))
	if err != nil || res.Msg.GetValue() != "echo twice" {
		t.Fatalf("marked call: %v %v", res, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(payloads, " "); got != "once twice twice" {
		t.Fatalf("server got %q, want once twice twice", got)
	}
	for i, ok := range budgets {
		if !ok {
			t.Fatalf("call %d: the server's deadline was not the attempt's budget", i+1)
		}
	}
}

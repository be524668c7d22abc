package resilience_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mercato-shop/mercato/platform/resilience"
)

// quick is a policy that stays out of the way: tests change what they are
// about. Delays are short so that retries are quick; nothing else waits.
func quick() resilience.Policy {
	return resilience.Policy{
		Timeout: time.Minute,
		Retry: resilience.Retry{
			MaxAttempts: 3,
			Backoff:     resilience.Backoff{Initial: time.Millisecond, Max: 2 * time.Millisecond},
		},
		CircuitBreaker: resilience.CircuitBreaker{FailureThreshold: 1000, Delay: time.Minute, SuccessThreshold: 1},
		Bulkhead:       resilience.Bulkhead{MaxConcurrent: 100, MaxWait: time.Minute},
	}
}

// newPolicies builds policies with quick defaults and the given targets.
func newPolicies(t *testing.T, logger *slog.Logger, targets map[string]resilience.Policy) *resilience.Policies {
	t.Helper()
	p, err := resilience.New(resilience.Config{Defaults: quick(), Targets: targets}, logger)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// upstream is a dependency: it answers with the statuses of its script in
// turn (then the last one, then 200 when the script is empty) and records
// what it received.
type upstream struct {
	*httptest.Server
	t *testing.T

	mu          sync.Mutex
	script      []int
	hits        int
	inFlight    int
	maxInFlight int
	bodies      []string
	headers     []http.Header
	canceled    int           // requests whose context ended while held
	hold        chan struct{} // non-nil: requests wait until it is closed
	entered     chan struct{} // receives one value per request that arrives
}

func newUpstream(t *testing.T, script ...int) *upstream {
	t.Helper()
	u := &upstream{t: t, script: script, entered: make(chan struct{}, 1000)}
	u.Server = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.hits++
	u.inFlight++
	u.maxInFlight = max(u.maxInFlight, u.inFlight)
	u.bodies = append(u.bodies, string(b))
	u.headers = append(u.headers, r.Header.Clone())
	status := http.StatusOK
	if len(u.script) > 0 {
		status = u.script[0]
		if len(u.script) > 1 {
			u.script = u.script[1:]
		}
	}
	hold := u.hold
	u.mu.Unlock()
	u.entered <- struct{}{}
	defer func() {
		u.mu.Lock()
		u.inFlight--
		u.mu.Unlock()
	}()
	if hold != nil {
		select {
		case <-hold:
		case <-r.Context().Done():
			u.mu.Lock()
			u.canceled++
			u.mu.Unlock()
			return
		}
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, "answer "+http.StatusText(status))
}

// answer sets the status of every next request.
func (u *upstream) answer(status int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.script = []int{status}
}

// holdRequests makes requests wait until release is called (or their
// context ends).
func (u *upstream) holdRequests() (release func()) {
	u.mu.Lock()
	defer u.mu.Unlock()
	ch := make(chan struct{})
	u.hold = ch
	var once sync.Once
	return func() {
		once.Do(func() {
			u.mu.Lock()
			u.hold = nil
			u.mu.Unlock()
			close(ch)
		})
	}
}

func (u *upstream) stats() (hits, maxInFlight, canceled int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.hits, u.maxInFlight, u.canceled
}

func (u *upstream) Hits() int {
	h, _, _ := u.stats()
	return h
}

// waitEntered waits until n more requests have arrived.
func (u *upstream) waitEntered(n int) {
	u.t.Helper()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	for range n {
		select {
		case <-u.entered:
		case <-timer.C:
			u.t.Fatalf("upstream: requests did not arrive (hits %d)", u.Hits())
		}
	}
}

// client sends through rt with a transport of its own.
func client(t *testing.T, wrap func(http.RoundTripper) http.RoundTripper) *http.Client {
	t.Helper()
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	return &http.Client{Transport: wrap(base)}
}

// do sends a request and returns its status ("" on error) and body.
func do(t *testing.T, c *http.Client, req *http.Request) (status int, body string, err error) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp.StatusCode, string(b), nil
}

func newRequest(t *testing.T, ctx context.Context, method, url, body string) *http.Request {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// status returns the breaker status of target.
func status(t *testing.T, p *resilience.Policies, target string) resilience.BreakerStatus {
	t.Helper()
	for _, s := range p.Breakers() {
		if s.Target == target {
			return s
		}
	}
	t.Fatalf("no breaker for %q in %+v", target, p.Breakers())
	return resilience.BreakerStatus{}
}

// checkFor polls cond until it holds or the deadline passes.
func checkFor(t *testing.T, timeout, interval time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(interval)
	}
}

// records is a slog handler that keeps what it is given.
type records struct {
	mu   sync.Mutex
	list []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.list = append(r.list, rec.Clone())
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

// find returns the attributes of the records with msg, as strings.
func (r *records) find(msg string) []map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]string
	for _, rec := range r.list {
		if rec.Message != msg {
			continue
		}
		m := map[string]string{"level": rec.Level.String()}
		rec.Attrs(func(a slog.Attr) bool {
			m[a.Key] = a.Value.String()
			return true
		})
		out = append(out, m)
	}
	return out
}

// newServer serves h and returns its URL.
func newServer(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

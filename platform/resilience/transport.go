package resilience

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/policy"
)

// IdempotencyKeyHeader marks a request that the server deduplicates: such a
// request is retried whatever its method.
const IdempotencyKeyHeader = "Idempotency-Key"

// connectTimeoutHeader carries a Connect call's deadline to the server.
const connectTimeoutHeader = "Connect-Timeout-Ms"

// Transport applies target's policies to every request sent through it,
// whatever its host: use it for a dependency known by address, such as the
// payment provider. next nil means http.DefaultTransport.
func (p *Policies) Transport(target string, next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	t := p.target(target)
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		return t.roundTrip(req, next)
	})
}

// ServiceTransport applies the policies of the service a request is sent
// to, read from its host: http://inventory/... is guarded by the
// "inventory" policies (the defaults for a service the file does not
// name). It sits above discovery.Transport, so that each retry is balanced
// again. Like discovery, it passes hosts with a dot or a port (addresses,
// DNS names) through unguarded: use Transport for those. next nil means
// http.DefaultTransport.
func (p *Policies) ServiceTransport(next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		service := req.URL.Host
		if service == "" || strings.ContainsAny(service, ".:") {
			return next.RoundTrip(req)
		}
		return p.target(service).roundTrip(req, next)
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

type idempotentKey struct{}

// Idempotent marks the calls made with the returned context as safe to
// repeat, so that they are retried although their method is not: Connect
// sends every unary call as a POST, so a client marks the calls of
// procedures that have no side effect, or whose server deduplicates them.
func Idempotent(ctx context.Context) context.Context {
	return context.WithValue(ctx, idempotentKey{}, true)
}

// retryable says whether repeating req cannot do twice what it asks for:
// its method is idempotent, or it carries an idempotency key, or its
// caller said so; and its body can be sent again.
func retryable(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return false // a streamed body is gone once sent
	}
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete:
		return true
	}
	return req.Header.Get(IdempotencyKeyHeader) != "" || req.Context().Value(idempotentKey{}) != nil
}

// failed says whether an attempt's outcome counts against the target (for
// its breaker) and is worth another attempt (for a retry).
func failed(resp *http.Response, err error) bool {
	if err != nil {
		// The caller gave up (its deadline is not the target's fault; the
		// attempt timeout judges slowness), or the call never left.
		return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) &&
			!errors.Is(err, ErrOpen) && !errors.Is(err, ErrFull) && !errors.Is(err, errNoReplay)
	}
	return resp.StatusCode == http.StatusTooManyRequests ||
		resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented
}

var (
	errNoReplay = errors.New("request body cannot be sent again")
	errNoTime   = errors.New("no time left for another attempt")
)

type callKey struct{}

// call is one request through a target's policies. Its attempts run one
// after the other on the caller's goroutine.
type call struct {
	target *target
	req    *http.Request
	next   http.RoundTripper
	cancel context.CancelCauseFunc

	attempts int
	sent     bool           // next has the body (and closes it)
	current  *http.Response // the last attempt's response, until passed on or discarded

	gaveUp   bool // no retry: the caller's deadline is too near
	final    *http.Response
	finalErr error
}

func (t *target) roundTrip(req *http.Request, next http.RoundTripper) (*http.Response, error) {
	t.n.calls.Add(1)
	// The call's context ends when the caller's does, or when a retry would
	// outlive the caller's deadline; then the backoff wait ends at once.
	ctx, cancel := context.WithCancelCause(req.Context())
	c := &call{target: t, req: req, next: next, cancel: cancel}
	ctx = context.WithValue(ctx, callKey{}, c)
	exec := t.once
	if retryable(req) {
		exec = t.retrying
	}
	resp, err := exec.WithContext(ctx).GetWithExecution(c.attempt)
	if c.gaveUp {
		resp, err = c.final, c.finalErr
	}
	if c.current != nil && c.current != resp {
		discard(c.current)
	}
	if !c.sent && req.Body != nil {
		req.Body.Close() // a RoundTripper closes the body, even when it sends nothing
	}
	if resp == nil {
		cancel(nil)
		switch {
		case errors.Is(err, ErrOpen):
			t.n.rejectedOpen.Add(1)
			err = fmt.Errorf("%s: %w", t.name, err)
		case errors.Is(err, ErrFull), errors.Is(err, ErrTimeout):
			err = fmt.Errorf("%s: %w", t.name, err)
		case err == nil:
			err = fmt.Errorf("%s: no response", t.name)
		}
		return nil, err
	}
	// The caller reads the body after the call: the call's context ends
	// when the body is closed.
	if b, ok := resp.Body.(*body); ok {
		b.done = append(b.done, func() { cancel(nil) })
	}
	return resp, nil
}

// attempt sends the request once, with a body of its own and the
// attempt's context.
func (c *call) attempt(exec failsafe.Execution[*http.Response]) (*http.Response, error) {
	out := c.req.Clone(exec.Context())
	if c.attempts > 0 && c.req.Body != nil && c.req.Body != http.NoBody {
		b, err := c.req.GetBody()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errNoReplay, err)
		}
		out.Body = b
	}
	c.attempts++
	c.propagateDeadline(out)
	c.sent = true
	c.target.n.attempts.Add(1)
	resp, err := c.next.RoundTrip(out)
	if err != nil {
		return nil, err
	}
	b := &body{ReadCloser: resp.Body}
	// The attempt's context (the timeout's) must outlive the attempt until
	// the body is read.
	if ei, ok := exec.(policy.ExecutionInternal[*http.Response]); ok {
		b.done = append(b.done, ei.DeferCancel())
	}
	resp.Body = b
	c.current = resp
	return resp, nil
}

// propagateDeadline tells a Connect server the budget of this attempt: the
// least of the attempt timeout and what is left of the caller's deadline.
// Connect computed the header once, before the first attempt; a retry
// would otherwise hand the server more time than its caller has.
func (c *call) propagateDeadline(out *http.Request) {
	sent := out.Header.Get(connectTimeoutHeader)
	if sent == "" {
		return
	}
	budget := c.target.policy.Timeout
	if dl, ok := c.req.Context().Deadline(); ok {
		budget = min(budget, time.Until(dl))
	}
	ms := max(budget.Milliseconds(), 1)
	if v, err := strconv.ParseInt(sent, 10, 64); err == nil && v > 0 {
		ms = min(ms, v)
	}
	out.Header.Set(connectTimeoutHeader, strconv.FormatInt(ms, 10))
}

// retryScheduled runs when a failed attempt is to be retried after delay.
// A retry is not started when the caller's deadline would end it: neither
// the wait nor the attempt would be of use.
func (t *target) retryScheduled(e failsafe.ExecutionScheduledEvent[*http.Response]) {
	c, ok := e.Context().Value(callKey{}).(*call)
	if !ok {
		return
	}
	if dl, ok := c.req.Context().Deadline(); ok && time.Until(dl) < e.Delay+t.policy.Timeout {
		t.n.noTimeLeft.Add(1)
		c.gaveUp = true
		c.final, c.finalErr = e.LastResult(), e.LastError()
		c.cancel(errNoTime)
		return
	}
	// The failed answer is dropped: free its connection before waiting.
	if c.current != nil {
		discard(c.current)
		c.current = nil
	}
}

// discard reads a little of a dropped response, so that its connection can
// be reused, and closes it.
func discard(resp *http.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
	resp.Body.Close()
}

// body is a response body that ends the contexts of its attempt and call
// when closed.
type body struct {
	io.ReadCloser
	once sync.Once
	done []func()
}

func (b *body) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(func() {
		for _, f := range b.done {
			f()
		}
	})
	return err
}

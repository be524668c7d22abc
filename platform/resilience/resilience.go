// Package resilience guards synchronous calls to other services and to
// outside systems (Release It!'s stability patterns, on failsafe-go): per
// target, a timeout per attempt, retries with exponential backoff and
// jitter for calls that are safe to repeat, a circuit breaker and a
// bulkhead. Policies are declared in one YAML file (deploy/resilience.yaml)
// with defaults and per-target overrides, in the spirit of Dapr's
// resiliency spec, and applied by an http.RoundTripper, so that REST
// clients and Connect clients get them the same way.
//
// A target is a dependency name ("inventory", "payment-provider"). Its
// breaker and bulkhead are built once and shared by every call to it, from
// every client of the same Policies.
//
// Per call, the policies compose as Retry(Bulkhead(CircuitBreaker(Timeout(
// attempt)))): every attempt takes a bulkhead slot and counts in the
// breaker, a rejected call (ErrFull, ErrOpen) is neither retried nor held
// against the target, and a retry waits for its backoff without holding a
// slot.
package resilience

import (
	"errors"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/bulkhead"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/retrypolicy"
	"github.com/failsafe-go/failsafe-go/timeout"
)

// Errors of a call the policies stopped, wrapped with the target's name.
// They are failsafe-go's own, so errors.Is works with either name.
var (
	// ErrOpen: the target's circuit breaker is open; the call failed fast
	// and did not reach the target.
	ErrOpen = circuitbreaker.ErrOpen
	// ErrFull: the target's bulkhead had no free slot within max_wait; the
	// call did not reach the target.
	ErrFull = bulkhead.ErrFull
	// ErrTimeout: an attempt got no response within the target's timeout.
	ErrTimeout = timeout.ErrExceeded
)

// Policies holds the resilience policies of one process's calls, one set
// per target, built once. It is safe for concurrent use.
type Policies struct {
	cfg    Config
	logger *slog.Logger

	mu      sync.Mutex
	targets map[string]*target
}

// New builds the policies of cfg. Targets not in cfg.Targets get
// cfg.Defaults on their first call. logger (nil: discard) hears breaker
// state changes.
func New(cfg Config, logger *slog.Logger) (*Policies, error) {
	var errs []error
	for _, pr := range cfg.Defaults.validate("defaults") {
		errs = append(errs, pr)
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Targets)) {
		for _, pr := range cfg.Targets[name].validate(name) {
			errs = append(errs, pr)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Policies{cfg: cfg, logger: logger, targets: map[string]*target{}}
	for name, pol := range cfg.Targets {
		p.targets[name] = newTarget(name, pol, logger)
	}
	return p, nil
}

// Load parses a policy file (see ParseConfig) and builds its policies: with
// the shipped file, Load(deploy.Resilience(), node.Logger()).
func Load(data []byte, logger *slog.Logger) (*Policies, error) {
	cfg, err := ParseConfig(data)
	if err != nil {
		return nil, err
	}
	return New(cfg, logger)
}

// Policy returns the policy that guards calls to target.
func (p *Policies) Policy(target string) Policy {
	if pol, ok := p.cfg.Targets[target]; ok {
		return pol
	}
	return p.cfg.Defaults
}

// target returns the policies of name, built on first use.
func (p *Policies) target(name string) *target {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.targets[name]
	if !ok {
		t = newTarget(name, p.cfg.Defaults, p.logger)
		p.targets[name] = t
	}
	return t
}

// target is the built policies of one dependency.
type target struct {
	name    string
	policy  Policy
	logger  *slog.Logger
	breaker circuitbreaker.CircuitBreaker[*http.Response]
	// once runs a call a single time; retrying repeats it. Both share the
	// breaker and the bulkhead.
	once, retrying failsafe.Executor[*http.Response]
	n              counters
}

// counters are cumulative since the process started.
type counters struct {
	calls, attempts, failures, timeouts, retries, noTimeLeft atomic.Uint64
	rejectedOpen, rejectedFull                               atomic.Uint64
	opened, halfOpened, closed                               atomic.Uint64
}

func newTarget(name string, pol Policy, logger *slog.Logger) *target {
	t := &target{name: name, policy: pol, logger: logger}
	type resp = *http.Response

	cb := pol.CircuitBreaker
	bb := circuitbreaker.NewBuilder[resp]().
		HandleIf(failed).
		WithDelay(cb.Delay).
		WithSuccessThreshold(uint(cb.SuccessThreshold)).
		OnFailure(func(failsafe.ExecutionEvent[resp]) { t.n.failures.Add(1) }).
		OnStateChanged(t.stateChanged)
	if cb.FailureRatio > 0 {
		bb = bb.WithFailureRateThreshold(cb.FailureRatio, uint(cb.MinCalls), cb.Window)
	} else {
		bb = bb.WithFailureThreshold(uint(cb.FailureThreshold))
	}
	t.breaker = bb.Build()

	bh := bulkhead.NewBuilder[resp](uint(pol.Bulkhead.MaxConcurrent)).
		WithMaxWaitTime(pol.Bulkhead.MaxWait).
		OnFull(func(failsafe.ExecutionEvent[resp]) { t.n.rejectedFull.Add(1) }).
		Build()
	to := timeout.NewBuilder[resp](pol.Timeout).
		OnTimeoutExceeded(func(failsafe.ExecutionDoneEvent[resp]) { t.n.timeouts.Add(1) }).
		Build()
	t.once = failsafe.With[resp](bh, t.breaker, to)
	t.retrying = t.once
	if r := pol.Retry; r.MaxAttempts > 1 {
		rb := retrypolicy.NewBuilder[resp]().
			HandleIf(failed).
			WithMaxAttempts(r.MaxAttempts).
			WithBackoff(r.Backoff.Initial, r.Backoff.Max).
			// The caller gets the last answer (a 503 with its body), not a
			// "retries exceeded" error.
			ReturnLastFailure().
			OnRetryScheduled(t.retryScheduled).
			OnRetry(func(failsafe.ExecutionEvent[resp]) { t.n.retries.Add(1) })
		if r.Jitter > 0 {
			rb = rb.WithJitterFactor(r.Jitter)
		}
		t.retrying = failsafe.With[resp](rb.Build(), bh, t.breaker, to)
	}
	return t
}

func (t *target) stateChanged(e circuitbreaker.StateChangedEvent) {
	level := slog.LevelInfo
	switch e.NewState {
	case circuitbreaker.OpenState:
		t.n.opened.Add(1)
		level = slog.LevelWarn
	case circuitbreaker.HalfOpenState:
		t.n.halfOpened.Add(1)
	case circuitbreaker.ClosedState:
		t.n.closed.Add(1)
	}
	m := e.Metrics()
	t.logger.Log(e.Context(), level, "circuit breaker state changed",
		"target", t.name, "from", e.OldState.String(), "to", e.NewState.String(),
		"executions", m.Executions(), "failures", m.Failures())
}

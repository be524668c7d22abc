package resilience

import (
	"cmp"
	"net/http"
	"slices"

	"github.com/mercato-shop/mercato/platform/web"
)

// BreakerStatus is the state of one target's circuit breaker, and what its
// policies have done since the process started.
type BreakerStatus struct {
	Target string `json:"target"`
	State  string `json:"state"` // closed, open, half-open
	// Window is what the breaker weighs now: the results since it last
	// closed (count mode: the last failure_threshold of them; ratio mode:
	// those within the window), or the probes while half-open.
	Window BreakerWindow `json:"window"`
	Counts Counts        `json:"counts"`
}

// BreakerWindow counts the results a breaker weighs.
type BreakerWindow struct {
	Executions uint `json:"executions"`
	Successes  uint `json:"successes"`
	Failures   uint `json:"failures"`
}

// Counts are cumulative.
type Counts struct {
	Calls    uint64 `json:"calls"`    // requests through the policies
	Attempts uint64 `json:"attempts"` // sent to the target, first attempts and retries
	Failures uint64 `json:"failures"` // attempts that failed (transport error, timeout, 5xx but 501, 429)
	Timeouts uint64 `json:"timeouts"`
	Retries  uint64 `json:"retries"`
	// RetriesSkipped counts retries not started because the caller's
	// deadline would have ended them.
	RetriesSkipped uint64 `json:"retries_skipped"`
	RejectedOpen   uint64 `json:"rejected_open"` // failed fast, breaker open
	RejectedFull   uint64 `json:"rejected_full"` // no bulkhead slot
	// State changes of the breaker.
	Opened     uint64 `json:"opened"`
	HalfOpened uint64 `json:"half_opened"`
	Closed     uint64 `json:"closed"`
}

// Breakers returns the status of every target called so far or named in
// the policy file, by target name.
func (p *Policies) Breakers() []BreakerStatus {
	p.mu.Lock()
	ts := make([]*target, 0, len(p.targets))
	for _, t := range p.targets {
		ts = append(ts, t)
	}
	p.mu.Unlock()
	out := make([]BreakerStatus, 0, len(ts))
	for _, t := range ts {
		out = append(out, t.status())
	}
	slices.SortFunc(out, func(a, b BreakerStatus) int { return cmp.Compare(a.Target, b.Target) })
	return out
}

func (t *target) status() BreakerStatus {
	m := t.breaker.Metrics()
	n := &t.n
	return BreakerStatus{
		Target: t.name,
		State:  t.breaker.State().String(),
		Window: BreakerWindow{Executions: m.Executions(), Successes: m.Successes(), Failures: m.Failures()},
		Counts: Counts{
			Calls: n.calls.Load(), Attempts: n.attempts.Load(), Failures: n.failures.Load(),
			Timeouts: n.timeouts.Load(), Retries: n.retries.Load(), RetriesSkipped: n.noTimeLeft.Load(),
			RejectedOpen: n.rejectedOpen.Load(), RejectedFull: n.rejectedFull.Load(),
			Opened: n.opened.Load(), HalfOpened: n.halfOpened.Load(), Closed: n.closed.Load(),
		},
	}
}

// Handler answers GET /admin/breakers with {"breakers": [BreakerStatus...]}.
// It does no authorization: mount it behind the admin role.
func (p *Policies) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			web.Error(w, r, http.StatusMethodNotAllowed, "breakers are read with GET")
			return
		}
		if r.URL.RawQuery != "" {
			web.Error(w, r, http.StatusBadRequest, "breakers take no query parameters")
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		web.WriteJSON(w, http.StatusOK, struct {
			Breakers []BreakerStatus `json:"breakers"`
		}{p.Breakers()})
	})
}

package resilience_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mercato-shop/mercato/platform/resilience"
)

// The metrics say what the breakers say: counts, rejections and the
// current state, one series per target.
func TestCollector_ExportsCountsAndBreakerState(t *testing.T) {
	pol := quick()
	pol.CircuitBreaker.FailureThreshold = 2
	p := newPolicies(t, nil, map[string]resilience.Policy{"inventory": pol})
	up := newUpstream(t, http.StatusInternalServerError)
	client := &http.Client{Transport: p.Transport("inventory", nil)}
	for range 3 { // two failures open it; the third is refused
		resp, err := client.Post(up.URL, "text/plain", nil)
		if err == nil {
			resp.Body.Close()
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(p.Collector())
	want := `
# HELP mercato_circuit_breaker_state 1 for the breaker's current state.
# TYPE mercato_circuit_breaker_state gauge
mercato_circuit_breaker_state{state="closed",target="inventory"} 0
mercato_circuit_breaker_state{state="half-open",target="inventory"} 0
mercato_circuit_breaker_state{state="open",target="inventory"} 1
# HELP mercato_circuit_breaker_transitions_total State changes of the breaker, by the state entered.
# TYPE mercato_circuit_breaker_transitions_total counter
mercato_circuit_breaker_transitions_total{target="inventory",to="closed"} 0
mercato_circuit_breaker_transitions_total{target="inventory",to="half-open"} 0
mercato_circuit_breaker_transitions_total{target="inventory",to="open"} 1
# HELP mercato_resilience_attempts_total Attempts sent to the target, first ones and retries.
# TYPE mercato_resilience_attempts_total counter
mercato_resilience_attempts_total{target="inventory"} 2
# HELP mercato_resilience_calls_total Calls through the target's policies.
# TYPE mercato_resilience_calls_total counter
mercato_resilience_calls_total{target="inventory"} 3
# HELP mercato_resilience_rejected_total Calls refused without an attempt: breaker open, or no bulkhead slot.
# TYPE mercato_resilience_rejected_total counter
mercato_resilience_rejected_total{reason="full",target="inventory"} 0
mercato_resilience_rejected_total{reason="open",target="inventory"} 1
`
	names := []string{"mercato_circuit_breaker_state", "mercato_circuit_breaker_transitions_total",
		"mercato_resilience_attempts_total", "mercato_resilience_calls_total", "mercato_resilience_rejected_total"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	if up.Hits() != 2 {
		t.Fatalf("upstream saw %d calls, want 2", up.Hits())
	}
}

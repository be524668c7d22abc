package resilience

import "github.com/prometheus/client_golang/prometheus"

// Collector exports every target's counts and breaker state as Prometheus
// metrics, read from the same counters as Breakers at each scrape:
//
//	mercato_resilience_calls_total{target}
//	mercato_resilience_attempts_total{target}
//	mercato_resilience_failures_total{target}
//	mercato_resilience_timeouts_total{target}
//	mercato_resilience_retries_total{target}
//	mercato_resilience_retries_skipped_total{target}
//	mercato_resilience_rejected_total{target,reason="open"|"full"}
//	mercato_circuit_breaker_state{target,state="closed"|"open"|"half-open"}  1 for the current state
//	mercato_circuit_breaker_transitions_total{target,to}
func (p *Policies) Collector() prometheus.Collector { return collector{p} }

type collector struct{ p *Policies }

var (
	descCalls       = desc("resilience_calls_total", "Calls through the target's policies.", "target")
	descAttempts    = desc("resilience_attempts_total", "Attempts sent to the target, first ones and retries.", "target")
	descFailures    = desc("resilience_failures_total", "Attempts that failed: transport error, timeout, 5xx but 501, 429.", "target")
	descTimeouts    = desc("resilience_timeouts_total", "Attempts that ran out of their timeout.", "target")
	descRetries     = desc("resilience_retries_total", "Retries started.", "target")
	descSkipped     = desc("resilience_retries_skipped_total", "Retries not started because the caller's deadline would have ended them.", "target")
	descRejected    = desc("resilience_rejected_total", "Calls refused without an attempt: breaker open, or no bulkhead slot.", "target", "reason")
	descState       = desc("circuit_breaker_state", "1 for the breaker's current state.", "target", "state")
	descTransitions = desc("circuit_breaker_transitions_total", "State changes of the breaker, by the state entered.", "target", "to")
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("mercato_"+name, help, labels, nil)
}

func (collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCalls, descAttempts, descFailures, descTimeouts, descRetries, descSkipped, descRejected, descState, descTransitions} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for _, b := range c.p.Breakers() {
		n := b.Counts
		counter(descCalls, n.Calls, b.Target)
		counter(descAttempts, n.Attempts, b.Target)
		counter(descFailures, n.Failures, b.Target)
		counter(descTimeouts, n.Timeouts, b.Target)
		counter(descRetries, n.Retries, b.Target)
		counter(descSkipped, n.RetriesSkipped, b.Target)
		counter(descRejected, n.RejectedOpen, b.Target, "open")
		counter(descRejected, n.RejectedFull, b.Target, "full")
		counter(descTransitions, n.Opened, b.Target, "open")
		counter(descTransitions, n.HalfOpened, b.Target, "half-open")
		counter(descTransitions, n.Closed, b.Target, "closed")
		for _, state := range []string{"closed", "open", "half-open"} {
			v := 0.0
			if b.State == state {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, v, b.Target, state)
		}
	}
}

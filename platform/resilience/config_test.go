package resilience_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mercato-shop/mercato/deploy"
	"github.com/mercato-shop/mercato/platform/resilience"
)

func TestParseConfig_ShippedPolicies(t *testing.T) {
	cfg, err := resilience.ParseConfig(deploy.Resilience())
	if err != nil {
		t.Fatalf("deploy/resilience.yaml: %v", err)
	}
	want := []string{"customer", "inventory", "order", "payment", "payment-provider"}
	if got := slices.Sorted(maps.Keys(cfg.Targets)); !slices.Equal(got, want) {
		t.Fatalf("targets %q, want %q", got, want)
	}
	d := cfg.Defaults
	if d.Retry.MaxAttempts < 2 || d.CircuitBreaker.FailureThreshold == 0 || d.Bulkhead.MaxConcurrent == 0 {
		t.Fatalf("defaults %+v: want retries, a count breaker and a bulkhead", d)
	}
	if got := cfg.Targets["inventory"]; !samePolicy(got, d) {
		t.Fatalf("inventory %+v, want the defaults %+v", got, d)
	}
	pp := cfg.Targets["payment-provider"]
	if pp.CircuitBreaker.FailureRatio == 0 || pp.CircuitBreaker.FailureThreshold != 0 {
		t.Fatalf("payment-provider breaker %+v: want a ratio breaker", pp.CircuitBreaker)
	}
	if pp.Retry.Jitter != d.Retry.Jitter {
		t.Fatalf("payment-provider jitter %v: want the default's %v", pp.Retry.Jitter, d.Retry.Jitter)
	}
	if _, err := resilience.Load(deploy.Resilience(), nil); err != nil {
		t.Fatal(err)
	}
}

func samePolicy(a, b resilience.Policy) bool {
	return a.Timeout == b.Timeout && a.Retry == b.Retry && a.CircuitBreaker == b.CircuitBreaker && a.Bulkhead == b.Bulkhead
}

// defaultsYAML sets every key; it is lines 1-13 of the files below.
const defaultsYAML = `defaults:
  timeout: 2s
  retry:
    max_attempts: 3
    backoff:
      initial: 100ms
      max: 1s
    jitter: 0.2
  circuit_breaker:
    failure_threshold: 5
    delay: 10s
    success_threshold: 1
  bulkhead: {max_concurrent: 64, max_wait: 100ms}
`

func TestParseConfig_TargetsOverrideOnlyWhatTheySet(t *testing.T) {
	cfg, err := resilience.ParseConfig([]byte(defaultsYAML + `targets:
  inventory:
    timeout: 500ms
    bulkhead: {max_concurrent: 8}
  provider:
    retry: {backoff: {max: 5s}}
    circuit_breaker: {failure_ratio: 0.5, window: 30s, min_calls: 10}
  plain: {}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := resilience.Policy{
		Timeout: 2 * time.Second,
		Retry: resilience.Retry{MaxAttempts: 3, Jitter: 0.2,
			Backoff: resilience.Backoff{Initial: 100 * time.Millisecond, Max: time.Second}},
		CircuitBreaker: resilience.CircuitBreaker{FailureThreshold: 5, Delay: 10 * time.Second, SuccessThreshold: 1},
		Bulkhead:       resilience.Bulkhead{MaxConcurrent: 64, MaxWait: 100 * time.Millisecond},
	}
	if !samePolicy(cfg.Defaults, want) {
		t.Fatalf("defaults %+v, want %+v", cfg.Defaults, want)
	}
	if got := cfg.Targets["plain"]; !samePolicy(got, want) {
		t.Fatalf("plain %+v, want the defaults", got)
	}

	inv := want
	inv.Timeout = 500 * time.Millisecond
	inv.Bulkhead.MaxConcurrent = 8
	if got := cfg.Targets["inventory"]; !samePolicy(got, inv) {
		t.Fatalf("inventory %+v, want %+v", got, inv)
	}

	// Choosing a ratio drops the count of the defaults; the delays stay.
	prov := want
	prov.Retry.Backoff.Max = 5 * time.Second
	prov.CircuitBreaker = resilience.CircuitBreaker{FailureRatio: 0.5, Window: 30 * time.Second, MinCalls: 10,
		Delay: 10 * time.Second, SuccessThreshold: 1}
	if got := cfg.Targets["provider"]; !samePolicy(got, prov) {
		t.Fatalf("provider %+v, want %+v", got, prov)
	}
}

func TestParseConfig_CountOverRatioDefaults(t *testing.T) {
	ratio := strings.Replace(defaultsYAML, "failure_threshold: 5", "failure_ratio: 0.5\n    window: 1m\n    min_calls: 20", 1)
	cfg, err := resilience.ParseConfig([]byte(ratio + "targets:\n  a:\n    circuit_breaker: {failure_threshold: 3}\n"))
	if err != nil {
		t.Fatal(err)
	}
	got := cfg.Targets["a"].CircuitBreaker
	if want := (resilience.CircuitBreaker{FailureThreshold: 3, Delay: 10 * time.Second, SuccessThreshold: 1}); got != want {
		t.Fatalf("breaker %+v, want %+v", got, want)
	}
}

func TestParseConfig_Errors(t *testing.T) {
	cases := []struct {
		name     string
		yaml     string
		wantLine int    // 0: no line to name
		wantText string // the error names the culprit
	}{
		{"unknown top-level key", defaultsYAML + "target:\n  a: {}\n", 14, "target"},
		{"unknown key in defaults", strings.Replace(defaultsYAML, "jitter:", "jiter:", 1), 8, "jiter"},
		{"unknown key in a target", defaultsYAML + "targets:\n  a:\n    retry: {max_attempt: 2}\n", 16, "max_attempt"},
		{"not a duration", strings.Replace(defaultsYAML, "timeout: 2s", "timeout: soon", 1), 2, "soon"},
		{"a duration without unit", strings.Replace(defaultsYAML, "timeout: 2s", "timeout: 2", 1), 2, "duration"},
		{"not a number", strings.Replace(defaultsYAML, "max_attempts: 3", "max_attempts: three", 1), 4, "three"},
		{"a list for a value", strings.Replace(defaultsYAML, "timeout: 2s", "timeout: [2s]", 1), 2, "single value"},
		{"no retries below one attempt", strings.Replace(defaultsYAML, "max_attempts: 3", "max_attempts: 0", 1), 4, "retry.max_attempts"},
		{"backoff max below initial", defaultsYAML + "targets:\n  a:\n    retry: {backoff: {max: 10ms}}\n", 16, "retry.backoff.max"},
		{"jitter above one", strings.Replace(defaultsYAML, "jitter: 0.2", "jitter: 1.5", 1), 8, "retry.jitter"},
		{"count and ratio together", defaultsYAML + "targets:\n  a:\n    circuit_breaker:\n      failure_threshold: 2\n      failure_ratio: 0.5\n      window: 1m\n      min_calls: 5\n", 18, "choose a count or a ratio"},
		{"ratio above one", defaultsYAML + "targets:\n  a:\n    circuit_breaker: {failure_ratio: 2, window: 1m, min_calls: 5}\n", 16, "failure_ratio"},
		{"ratio without window", defaultsYAML + "targets:\n  a:\n    circuit_breaker: {failure_ratio: 0.5, min_calls: 5}\n", 0, "a: circuit_breaker.window"},
		{"window with a count", defaultsYAML + "targets:\n  a:\n    circuit_breaker: {window: 1m}\n", 16, "goes with failure_ratio"},
		{"no bulkhead slot", defaultsYAML + "targets:\n  a:\n    bulkhead: {max_concurrent: 0}\n", 16, "bulkhead.max_concurrent"},
		{"bad target name", defaultsYAML + "targets:\n  Payment_Provider: {}\n", 15, "Payment_Provider"},
		{"defaults incomplete", "defaults:\n  timeout: 1s\n", 0, "defaults: retry.max_attempts"},
		{"empty file", "", 0, "empty"},
		{"duplicate target", defaultsYAML + "targets:\n  a: {}\n  a: {}\n", 16, `"a"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := resilience.ParseConfig([]byte(c.yaml))
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			if !strings.Contains(msg, c.wantText) {
				t.Errorf("error %q does not name %q", msg, c.wantText)
			}
			if c.wantLine > 0 && !strings.Contains(msg, fmt.Sprintf("line %d:", c.wantLine)) {
				t.Errorf("error %q does not name line %d", msg, c.wantLine)
			}
		})
	}
}

func TestParseConfig_DefaultsProblemSaidOnce(t *testing.T) {
	yaml := strings.Replace(defaultsYAML, "delay: 10s", "delay: 0s", 1) + "targets:\n  a: {}\n  b: {}\n"
	_, err := resilience.ParseConfig([]byte(yaml))
	if err == nil {
		t.Fatal("accepted a breaker that never waits")
	}
	if n := strings.Count(err.Error(), "circuit_breaker.delay"); n != 1 {
		t.Fatalf("error %q: the problem of defaults is said %d times, want once", err, n)
	}
	if !strings.Contains(err.Error(), "line 11:") {
		t.Fatalf("error %q does not name line 11", err)
	}
}

func TestNew_RejectsInvalidPolicies(t *testing.T) {
	bad := quick()
	bad.Bulkhead.MaxConcurrent = 0
	_, err := resilience.New(resilience.Config{Defaults: quick(), Targets: map[string]resilience.Policy{"inventory": bad}}, nil)
	if err == nil || !strings.Contains(err.Error(), "inventory: bulkhead.max_concurrent") {
		t.Fatalf("err %v, want it to name inventory's bulkhead", err)
	}
	if _, err := resilience.New(resilience.Config{}, nil); err == nil || !strings.Contains(err.Error(), "defaults: timeout") {
		t.Fatalf("err %v, want it to name the defaults' timeout", err)
	}
}

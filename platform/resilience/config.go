package resilience

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is a resilience policy file: the defaults, and the targets that
// differ from them. Each target's Policy is complete (defaults merged in).
type Config struct {
	Defaults Policy
	Targets  map[string]Policy
}

// Policy is what guards the calls to one target: each attempt has a
// timeout, failed attempts are retried, a circuit breaker stops calls to a
// target that keeps failing, and a bulkhead caps the calls in flight.
type Policy struct {
	// Timeout bounds one attempt, until the response headers arrive.
	Timeout        time.Duration
	Retry          Retry
	CircuitBreaker CircuitBreaker
	Bulkhead       Bulkhead

	// lines says where each setting was read ("retry.max_attempts": 12), so
	// that validation errors name the line; nil for a Policy built in Go.
	lines map[string]int
}

// Retry says how often and how late failed attempts are repeated.
type Retry struct {
	MaxAttempts int // including the first; 1 turns retries off
	Backoff     Backoff
	// Jitter varies each delay by up to ±Jitter of it (0.2: ±20%), so that
	// callers that failed together do not retry together.
	Jitter float64
}

// Backoff is exponential: Initial, then doubled per retry up to Max.
type Backoff struct {
	Initial time.Duration
	Max     time.Duration
}

// CircuitBreaker opens after too many failures, either FailureThreshold in
// a row (count), or a FailureRatio of the calls within Window once MinCalls
// have been made in it (ratio). It stays open for Delay, then lets
// SuccessThreshold probes through (half-open): if they all succeed it
// closes, and a failure opens it again.
type CircuitBreaker struct {
	FailureThreshold int

	FailureRatio float64
	Window       time.Duration
	MinCalls     int

	Delay            time.Duration
	SuccessThreshold int
}

// Bulkhead caps the attempts in flight to a target; an attempt waits up to
// MaxWait for a free slot, then fails with ErrFull.
type Bulkhead struct {
	MaxConcurrent int
	MaxWait       time.Duration
}

// ParseConfig reads a policy file. It is strict: unknown keys, values of
// the wrong kind and invalid policies are errors that name their line, and
// every setting must have a value in defaults.
func ParseConfig(data []byte) (Config, error) {
	var raw struct {
		Defaults rawPolicy            `yaml:"defaults"`
		Targets  map[string]rawPolicy `yaml:"targets"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
		return Config{}, errors.New("resilience config: the file is empty")
	} else if err != nil {
		return Config{}, fmt.Errorf("resilience config: %w", readable(err))
	}
	cfg := Config{Defaults: raw.Defaults.over(Policy{}), Targets: map[string]Policy{}}
	var errs []error
	inDefaults := map[string]bool{}
	for _, pr := range cfg.Defaults.validate("defaults") {
		inDefaults[pr.key] = true
		errs = append(errs, pr)
	}
	keyLines := targetLines(data)
	for _, name := range slices.Sorted(maps.Keys(raw.Targets)) {
		if !targetName.MatchString(name) {
			errs = append(errs, fmt.Errorf("line %d: target %q must be a dependency name (lower case, digits, dashes)", keyLines[name], name))
			continue
		}
		p := raw.Targets[name].over(cfg.Defaults)
		for _, pr := range p.validate(name) {
			// A target inherits what is wrong in defaults: say it once.
			if !inDefaults[pr.key] || p.lines[pr.key] != cfg.Defaults.lines[pr.key] {
				errs = append(errs, pr)
			}
		}
		cfg.Targets[name] = p
	}
	if len(errs) > 0 {
		return Config{}, fmt.Errorf("resilience config: %w", errors.Join(errs...))
	}
	return cfg, nil
}

// problem is one invalid setting of a policy.
type problem struct {
	key  string // "retry.max_attempts"
	text string
}

func (p problem) Error() string { return p.text }

var targetName = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)

// validate returns what is wrong with p, each problem naming the line of
// the setting, or where (a target name or "defaults") when p was not read
// from a file.
func (p Policy) validate(where string) []problem {
	var out []problem
	check := func(ok bool, key, text string) {
		if ok {
			return
		}
		if line := p.lines[key]; line > 0 {
			out = append(out, problem{key, fmt.Sprintf("line %d: %s %s", line, key, text)})
		} else {
			out = append(out, problem{key, fmt.Sprintf("%s: %s %s", where, key, text)})
		}
	}
	const positive = "must be set and more than 0"
	check(p.Timeout > 0, "timeout", positive)
	r := p.Retry
	check(r.MaxAttempts >= 1 && r.MaxAttempts <= 10, "retry.max_attempts", "must be from 1 (no retries) to 10")
	check(r.Backoff.Initial > 0, "retry.backoff.initial", positive)
	check(r.Backoff.Max >= r.Backoff.Initial, "retry.backoff.max", "must be set and at least retry.backoff.initial")
	check(r.Jitter >= 0 && r.Jitter <= 1, "retry.jitter", "must be from 0 to 1")
	cb := p.CircuitBreaker
	switch {
	case cb.FailureThreshold != 0 && cb.FailureRatio != 0:
		check(false, "circuit_breaker.failure_ratio", "cannot go with circuit_breaker.failure_threshold: choose a count or a ratio")
	case cb.FailureRatio != 0:
		check(cb.FailureRatio > 0 && cb.FailureRatio <= 1, "circuit_breaker.failure_ratio", "must be more than 0 and at most 1")
		check(cb.Window > 0, "circuit_breaker.window", "must be set and more than 0 with a failure_ratio")
		check(cb.MinCalls >= 1, "circuit_breaker.min_calls", "must be set and at least 1 with a failure_ratio")
	default:
		check(cb.FailureThreshold >= 1, "circuit_breaker.failure_threshold", "must be set (or failure_ratio, window and min_calls) and at least 1")
		check(cb.Window == 0, "circuit_breaker.window", "goes with failure_ratio, not failure_threshold")
		check(cb.MinCalls == 0, "circuit_breaker.min_calls", "goes with failure_ratio, not failure_threshold")
	}
	check(cb.Delay > 0, "circuit_breaker.delay", positive)
	check(cb.SuccessThreshold >= 1, "circuit_breaker.success_threshold", "must be set and at least 1")
	check(p.Bulkhead.MaxConcurrent >= 1, "bulkhead.max_concurrent", "must be set and at least 1")
	check(p.Bulkhead.MaxWait >= 0, "bulkhead.max_wait", "cannot be negative")
	return out
}

// rawPolicy is a policy as written: nil fields are not set.
type rawPolicy struct {
	Timeout *setting[time.Duration] `yaml:"timeout"`
	Retry   *struct {
		MaxAttempts *setting[int] `yaml:"max_attempts"`
		Backoff     *struct {
			Initial *setting[time.Duration] `yaml:"initial"`
			Max     *setting[time.Duration] `yaml:"max"`
		} `yaml:"backoff"`
		Jitter *setting[float64] `yaml:"jitter"`
	} `yaml:"retry"`
	CircuitBreaker *struct {
		FailureThreshold *setting[int]           `yaml:"failure_threshold"`
		FailureRatio     *setting[float64]       `yaml:"failure_ratio"`
		Window           *setting[time.Duration] `yaml:"window"`
		MinCalls         *setting[int]           `yaml:"min_calls"`
		Delay            *setting[time.Duration] `yaml:"delay"`
		SuccessThreshold *setting[int]           `yaml:"success_threshold"`
	} `yaml:"circuit_breaker"`
	Bulkhead *struct {
		MaxConcurrent *setting[int]           `yaml:"max_concurrent"`
		MaxWait       *setting[time.Duration] `yaml:"max_wait"`
	} `yaml:"bulkhead"`
}

// over returns base with the settings r sets replaced.
func (r rawPolicy) over(base Policy) Policy {
	p := base
	p.lines = maps.Clone(base.lines)
	if p.lines == nil {
		p.lines = map[string]int{}
	}
	set(&p, r.Timeout, "timeout", &p.Timeout)
	if rt := r.Retry; rt != nil {
		set(&p, rt.MaxAttempts, "retry.max_attempts", &p.Retry.MaxAttempts)
		if b := rt.Backoff; b != nil {
			set(&p, b.Initial, "retry.backoff.initial", &p.Retry.Backoff.Initial)
			set(&p, b.Max, "retry.backoff.max", &p.Retry.Backoff.Max)
		}
		set(&p, rt.Jitter, "retry.jitter", &p.Retry.Jitter)
	}
	if cb := r.CircuitBreaker; cb != nil {
		// A target that picks a mode (count or ratio) drops the other mode
		// of the defaults, instead of ending up with both.
		if cb.FailureThreshold != nil {
			p.CircuitBreaker.FailureRatio, p.CircuitBreaker.Window, p.CircuitBreaker.MinCalls = 0, 0, 0
		}
		if cb.FailureRatio != nil {
			p.CircuitBreaker.FailureThreshold = 0
		}
		set(&p, cb.FailureThreshold, "circuit_breaker.failure_threshold", &p.CircuitBreaker.FailureThreshold)
		set(&p, cb.FailureRatio, "circuit_breaker.failure_ratio", &p.CircuitBreaker.FailureRatio)
		set(&p, cb.Window, "circuit_breaker.window", &p.CircuitBreaker.Window)
		set(&p, cb.MinCalls, "circuit_breaker.min_calls", &p.CircuitBreaker.MinCalls)
		set(&p, cb.Delay, "circuit_breaker.delay", &p.CircuitBreaker.Delay)
		set(&p, cb.SuccessThreshold, "circuit_breaker.success_threshold", &p.CircuitBreaker.SuccessThreshold)
	}
	if b := r.Bulkhead; b != nil {
		set(&p, b.MaxConcurrent, "bulkhead.max_concurrent", &p.Bulkhead.MaxConcurrent)
		set(&p, b.MaxWait, "bulkhead.max_wait", &p.Bulkhead.MaxWait)
	}
	return p
}

func set[T any](p *Policy, s *setting[T], key string, dst *T) {
	if s == nil {
		return
	}
	*dst = s.v
	p.lines[key] = s.line
}

// setting is one scalar value and the line it was read from.
type setting[T any] struct {
	v    T
	line int
}

func (s *setting[T]) UnmarshalYAML(n *yaml.Node) error {
	s.line = n.Line
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a single value", n.Line)
	}
	if d, ok := any(&s.v).(*time.Duration); ok {
		// A bare number would leave the unit to guesswork.
		v, err := time.ParseDuration(n.Value)
		if err != nil {
			return fmt.Errorf("line %d: %q is not a duration (write it like 250ms, 2s or 1m)", n.Line, n.Value)
		}
		*d = v
		return nil
	}
	return n.Decode(&s.v) // its errors name the line
}

var unknownField = regexp.MustCompile(`^(line \d+): field (\S+) not found in type .*$`)

// readable rewrites yaml's "field x not found in type struct {...}", which
// speaks of Go types, as "unknown key".
func readable(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	errs := make([]error, len(te.Errors))
	for i, e := range te.Errors {
		errs[i] = errors.New(unknownField.ReplaceAllString(e, `$1: unknown key "$2"`))
	}
	return errors.Join(errs...)
}

// targetLines maps each target name to the line of its key.
func targetLines(data []byte) map[string]int {
	out := map[string]int{}
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil || len(doc.Content) == 0 {
		return out
	}
	root := doc.Content[0]
	for i := 0; root.Kind == yaml.MappingNode && i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value != "targets" {
			continue
		}
		ts := root.Content[i+1]
		for j := 0; ts.Kind == yaml.MappingNode && j+1 < len(ts.Content); j += 2 {
			out[ts.Content[j].Value] = ts.Content[j].Line
		}
	}
	return out
}

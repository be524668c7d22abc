package discovery

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// Policy is how a Balancer chooses among the live instances of a service.
type Policy string

const (
	// PowerOfTwo draws two instances at random and takes the one with
	// fewer calls outstanding: it steers away from a slow instance without
	// the herd behaviour of always picking the least loaded.
	PowerOfTwo Policy = "p2c"
	// RoundRobin takes the instances in turn.
	RoundRobin Policy = "round_robin"
)

// BalancerConfig configures a Balancer; zero values take the defaults.
type BalancerConfig struct {
	Policy Policy // default PowerOfTwo
	// EjectAfter consecutive failed calls eject an instance (outlier
	// detection); default 5.
	EjectAfter int
	// EjectFor is how long the first ejection lasts; each ejection in a row
	// doubles it, up to eight times as long. Default 10s.
	EjectFor time.Duration
	// MaxEjectedPercent of a service's instances may be ejected at once;
	// default 50. One instance always stays: with every instance failing,
	// calls still go somewhere and fail fast.
	MaxEjectedPercent int
	// Now is the clock; default time.Now.
	Now func() time.Time
}

func (c BalancerConfig) withDefaults() (BalancerConfig, error) {
	switch c.Policy {
	case "":
		c.Policy = PowerOfTwo
	case PowerOfTwo, RoundRobin:
	default:
		return c, fmt.Errorf("discovery: unknown balancing policy %q (want %s or %s)", c.Policy, PowerOfTwo, RoundRobin)
	}
	if c.EjectAfter <= 0 {
		c.EjectAfter = 5
	}
	if c.EjectFor <= 0 {
		c.EjectFor = 10 * time.Second
	}
	if c.MaxEjectedPercent <= 0 || c.MaxEjectedPercent > 100 {
		c.MaxEjectedPercent = 50
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, nil
}

// Lister returns the live instances of a service; Registry is one.
type Lister interface {
	Instances(service string) []Instance
}

// Balancer is client-side load balancing over a Lister: it picks an
// instance per call (Resolve) and learns from each call's outcome (Done),
// counting calls outstanding per instance and ejecting for a while an
// instance whose calls keep failing. It is safe for concurrent use.
type Balancer struct {
	list Lister
	cfg  BalancerConfig

	mu    sync.Mutex
	rng   *rand.Rand
	next  map[string]uint64 // round-robin position per service
	stats map[string]*instanceStats
	picks uint64
}

type instanceStats struct {
	service      string
	outstanding  int
	failures     int // in a row
	ejections    int // in a row, for the doubling
	ejectedUntil time.Time
	calls, errs  uint64
}

// NewBalancer balances over the instances list gives.
func NewBalancer(list Lister, cfg BalancerConfig) (*Balancer, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Balancer{
		list:  list,
		cfg:   cfg,
		rng:   rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		next:  map[string]uint64{},
		stats: map[string]*instanceStats{},
	}, nil
}

// Resolve picks an instance of service for one call; the caller reports
// the call's outcome with Done. It fails with ErrNoInstance, wrapped with
// the service name, when the service has no live instance.
func (b *Balancer) Resolve(ctx context.Context, service string) (Instance, error) {
	if err := ctx.Err(); err != nil {
		return Instance{}, fmt.Errorf("discovery: resolve %s: %w", service, err)
	}
	live := b.list.Instances(service)
	if v := VersionOf(ctx); v != "" {
		// A copy: the list may be the lister's own.
		live = slices.DeleteFunc(slices.Clone(live), func(inst Instance) bool { return inst.Version != v })
		if len(live) == 0 {
			return Instance{}, fmt.Errorf("%w of %q version %q", ErrNoInstance, service, v)
		}
	}
	if len(live) == 0 {
		return Instance{}, fmt.Errorf("%w of %q", ErrNoInstance, service)
	}
	now := b.cfg.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.picks++
	if b.picks%1024 == 0 {
		b.prune(now)
	}
	candidates := make([]Instance, 0, len(live))
	for _, inst := range live {
		if st := b.stats[inst.ID]; st == nil || !now.Before(st.ejectedUntil) {
			candidates = append(candidates, inst)
		}
	}
	if len(candidates) == 0 {
		candidates = live // never none: every instance ejected means all fail alike
	}
	var pick Instance
	switch {
	case len(candidates) == 1:
		pick = candidates[0]
	case b.cfg.Policy == RoundRobin:
		n := b.next[service]
		b.next[service] = n + 1
		pick = candidates[n%uint64(len(candidates))]
	default:
		i := b.rng.IntN(len(candidates))
		j := b.rng.IntN(len(candidates) - 1)
		if j >= i {
			j++
		}
		pick = candidates[i]
		if b.stat(candidates[j]).outstanding < b.stat(pick).outstanding {
			pick = candidates[j]
		}
	}
	st := b.stat(pick)
	st.outstanding++
	st.calls++
	return pick, nil
}

// stat returns inst's counters, creating them. b.mu is held.
func (b *Balancer) stat(inst Instance) *instanceStats {
	st := b.stats[inst.ID]
	if st == nil {
		st = &instanceStats{service: inst.Service}
		b.stats[inst.ID] = st
	}
	return st
}

// Done reports how a call to inst, picked by Resolve, went: err nil is a
// success. A failure is what says the instance is unwell (no connection, a
// 5xx answer), not a caller's mistake.
func (b *Balancer) Done(inst Instance, err error) {
	now := b.cfg.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.stats[inst.ID]
	if st == nil {
		return
	}
	if st.outstanding > 0 {
		st.outstanding--
	}
	if err == nil {
		st.failures, st.ejections = 0, 0
		return
	}
	st.errs++
	st.failures++
	if st.failures < b.cfg.EjectAfter || now.Before(st.ejectedUntil) || !b.mayEject(inst.Service, now) {
		return
	}
	st.ejectedUntil = now.Add(b.cfg.EjectFor << min(st.ejections, 3))
	st.ejections++
	st.failures = 0
}

// mayEject says whether one more instance of service may be ejected now.
// b.mu is held.
func (b *Balancer) mayEject(service string, now time.Time) bool {
	live := b.list.Instances(service)
	ejected := 0
	for _, inst := range live {
		if st := b.stats[inst.ID]; st != nil && now.Before(st.ejectedUntil) {
			ejected++
		}
	}
	return ejected+1 < len(live) && (ejected+1)*100 <= len(live)*b.cfg.MaxEjectedPercent
}

// prune forgets instances neither ejected nor busy that no longer serve:
// replicas come and go under new ids. b.mu is held.
func (b *Balancer) prune(now time.Time) {
	live := map[string]bool{}
	services := map[string]bool{}
	for _, st := range b.stats {
		services[st.service] = true
	}
	for service := range services {
		for _, inst := range b.list.Instances(service) {
			live[inst.ID] = true
		}
	}
	for id, st := range b.stats {
		if !live[id] && st.outstanding == 0 && !now.Before(st.ejectedUntil) {
			delete(b.stats, id)
		}
	}
}

// InstanceStats is what a Balancer knows of one instance.
type InstanceStats struct {
	Instance     Instance  `json:"instance"`
	Outstanding  int       `json:"outstanding"`
	Calls        uint64    `json:"calls"`
	Failures     uint64    `json:"failures"`
	EjectedUntil time.Time `json:"ejected_until,omitzero"`
}

// Stats returns the live instances of service with their counters.
func (b *Balancer) Stats(service string) []InstanceStats {
	live := b.list.Instances(service)
	now := b.cfg.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]InstanceStats, len(live))
	for i, inst := range live {
		out[i] = InstanceStats{Instance: inst}
		if st := b.stats[inst.ID]; st != nil {
			out[i].Outstanding, out[i].Calls, out[i].Failures = st.outstanding, st.calls, st.errs
			if now.Before(st.ejectedUntil) {
				out[i].EjectedUntil = st.ejectedUntil
			}
		}
	}
	return out
}

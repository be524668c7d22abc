package discovery

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a settable clock for ejection times.
type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time { return c.now }

func balancer(t *testing.T, addrs []string, cfg BalancerConfig) (*Balancer, *fakeClock) {
	t.Helper()
	clock := &fakeClock{now: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	cfg.Now = clock.Now
	b, err := NewBalancer(Static(map[string][]string{"svc": addrs}), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b, clock
}

func pick(t *testing.T, b *Balancer) Instance {
	t.Helper()
	inst, err := b.Resolve(context.Background(), "svc")
	if err != nil {
		t.Fatal(err)
	}
	return inst
}

var errDown = errors.New("connection refused")

func TestBalancer_RoundRobinTakesInstancesInTurn(t *testing.T) {
	b, _ := balancer(t, []string{"a:1", "b:1", "c:1"}, BalancerConfig{Policy: RoundRobin})
	counts := map[string]int{}
	for range 300 {
		inst := pick(t, b)
		counts[inst.Addr]++
		b.Done(inst, nil)
	}
	for _, addr := range []string{"a:1", "b:1", "c:1"} {
		if counts[addr] != 100 {
			t.Fatalf("picks %v, want 100 each", counts)
		}
	}
}

func TestBalancer_PowerOfTwoSteersAwayFromABusyInstance(t *testing.T) {
	b, _ := balancer(t, []string{"a:1", "b:1", "c:1"}, BalancerConfig{})
	// Ten calls outstanding on one instance: it is the slow one.
	busy := pick(t, b)
	b.mu.Lock()
	b.stat(busy).outstanding = 10
	b.mu.Unlock()
	counts := map[string]int{}
	for range 1000 {
		inst := pick(t, b)
		counts[inst.ID]++
		b.Done(inst, nil)
	}
	// Two draws never both land on the busy one, and it loses every draw.
	if counts[busy.ID] != 0 || len(counts) != 2 {
		t.Fatalf("picks %v with %s holding 10 calls", counts, busy.ID)
	}
	// Once its calls end, it is back in the mix.
	for range 10 {
		b.Done(busy, nil)
	}
	clear(counts)
	for range 3000 {
		inst := pick(t, b)
		counts[inst.ID]++
		b.Done(inst, nil)
	}
	for id, n := range counts {
		if n < 800 || n > 1200 {
			t.Fatalf("idle instances share calls unevenly: %v (%s)", counts, id)
		}
	}
}

func TestBalancer_EjectsAnInstanceThatKeepsFailingThenTakesItBack(t *testing.T) {
	b, clock := balancer(t, []string{"a:1", "b:1", "c:1", "d:1"}, BalancerConfig{Policy: RoundRobin, EjectAfter: 3, EjectFor: time.Second})
	bad := Instance{Service: "svc", ID: "a:1", Addr: "a:1"}
	fail := func(n int) {
		for i := 0; i < n; {
			inst := pick(t, b)
			if inst.ID == bad.ID {
				b.Done(inst, errDown)
				i++
			} else {
				b.Done(inst, nil)
			}
		}
	}
	fail(2)
	b.Done(pick(t, b), nil) // others succeeding do not reset a's count
	fail(1)
	for range 100 {
		inst := pick(t, b)
		if inst.ID == bad.ID {
			t.Fatal("an instance that failed 3 calls in a row is still picked")
		}
		b.Done(inst, nil)
	}
	if st := b.Stats("svc")[0]; st.Instance.ID != bad.ID || st.EjectedUntil.IsZero() || st.Failures != 3 {
		t.Fatalf("stats of the ejected instance: %+v", st)
	}

	// After EjectFor it is tried again; failing again ejects it for twice as long.
	clock.now = clock.now.Add(time.Second)
	fail(3)
	clock.now = clock.now.Add(time.Second)
	for range 20 {
		if inst := pick(t, b); inst.ID == bad.ID {
			t.Fatal("a second ejection did not last twice as long")
		} else {
			b.Done(inst, nil)
		}
	}
	clock.now = clock.now.Add(time.Second)
	seen := false
	for range 20 {
		inst := pick(t, b)
		seen = seen || inst.ID == bad.ID
		b.Done(inst, nil)
	}
	if !seen {
		t.Fatal("the instance is not taken back after its ejection")
	}
}

func TestBalancer_NeverEjectsMoreThanItsShare(t *testing.T) {
	b, _ := balancer(t, []string{"a:1", "b:1"}, BalancerConfig{Policy: RoundRobin, EjectAfter: 1})
	// Both fail: only one may be ejected (50% of two), and calls go on.
	for range 10 {
		b.Done(pick(t, b), errDown)
	}
	ejected := 0
	for _, st := range b.Stats("svc") {
		if !st.EjectedUntil.IsZero() {
			ejected++
		}
	}
	if ejected != 1 {
		t.Fatalf("%d of 2 instances ejected, want 1", ejected)
	}

	// A lone instance is never ejected.
	solo, _ := balancer(t, []string{"a:1"}, BalancerConfig{EjectAfter: 1})
	for range 5 {
		solo.Done(pick(t, solo), errDown)
	}
	if st := solo.Stats("svc")[0]; !st.EjectedUntil.IsZero() {
		t.Fatalf("the only instance was ejected: %+v", st)
	}
}

func TestBalancer_NoInstanceAndBadConfig(t *testing.T) {
	b, _ := balancer(t, nil, BalancerConfig{})
	if _, err := b.Resolve(context.Background(), "svc"); !errors.Is(err, ErrNoInstance) {
		t.Fatalf("resolve with no instance: %v", err)
	}
	if _, err := NewBalancer(Static(nil), BalancerConfig{Policy: "random"}); err == nil {
		t.Fatal("an unknown policy was accepted")
	}
}

// Through the transport, a 5xx answer counts against the instance like a
// refused connection, and outstanding calls are counted until answered.
func TestBalancer_LearnsFromTheTransport(t *testing.T) {
	var healthy, broken atomic.Int64
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { healthy.Add(1) }))
	defer good.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		broken.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer bad.Close()
	b, err := NewBalancer(Static(map[string][]string{"svc": {good.Listener.Addr().String(), bad.Listener.Addr().String()}}),
		BalancerConfig{Policy: RoundRobin, EjectAfter: 2})
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: Transport(b, nil)}
	for i := range 20 {
		resp, err := client.Get("http://svc/x")
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		resp.Body.Close()
	}
	if n := broken.Load(); n != 2 {
		t.Fatalf("the failing instance got %d calls, want 2 before its ejection", n)
	}
	for _, st := range b.Stats("svc") {
		if st.Outstanding != 0 {
			t.Fatalf("%s: %d calls outstanding after all were answered", st.Instance.Addr, st.Outstanding)
		}
	}
	if got := fmt.Sprint(healthy.Load()); got != "18" {
		t.Fatalf("the healthy instance got %s calls, want 18", got)
	}
}

// A call that asks for a version gets an instance of it, or none.
func TestBalancer_PicksTheVersionAskedFor(t *testing.T) {
	list := fixedList{"inventory": {
		{Service: "inventory", ID: "a", Addr: "a:1", Version: "v1"},
		{Service: "inventory", ID: "b", Addr: "b:1", Version: "v2"},
		{Service: "inventory", ID: "c", Addr: "c:1", Version: "v1"},
	}}
	b, err := NewBalancer(list, BalancerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for range 100 {
		inst, err := b.Resolve(WithVersion(context.Background(), "v1"), "inventory")
		if err != nil {
			t.Fatal(err)
		}
		b.Done(inst, nil)
		seen[inst.Version]++
	}
	if seen["v1"] != 100 {
		t.Fatalf("versions picked for v1: %v", seen)
	}
	if _, err := b.Resolve(WithVersion(context.Background(), "v3"), "inventory"); !errors.Is(err, ErrNoInstance) {
		t.Fatalf("an absent version: %v, want ErrNoInstance", err)
	}
	if n := len(list["inventory"]); n != 3 || list["inventory"][1].Version != "v2" {
		t.Fatal("filtering changed the lister's list")
	}
	if _, err := Static(map[string][]string{"inventory": {"a:1"}}).Resolve(WithVersion(context.Background(), "v1"), "inventory"); !errors.Is(err, ErrNoInstance) {
		t.Fatalf("a static table asked for a version: %v, want ErrNoInstance", err)
	}
}

type fixedList map[string][]Instance

func (l fixedList) Instances(service string) []Instance { return l[service] }

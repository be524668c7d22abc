package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func TestRegistry_OtherViewsSeeRegisteredInstances(t *testing.T) {
	forEachServer(t, func(t *testing.T, js jetstream.JetStream) {
		cfg := testConfig(t, js)
		owner := newRegistry(t, js, cfg)
		a1 := register(t, owner, Instance{Service: "alpha", ID: "a1", Addr: "127.0.0.1:1001", Version: "v1", Meta: map[string]string{"zone": "z1"}})
		a2 := register(t, owner, Instance{Service: "alpha", ID: "a2", Addr: "127.0.0.1:1002"})
		b1 := register(t, owner, Instance{Service: "beta", ID: "b1", Addr: "127.0.0.1:2001"})

		view := newRegistry(t, js, cfg)
		// NewRegistry waits for the current values, so the view is complete at once.
		if got := ids(view.Instances("alpha")); !slices.Equal(got, []string{a1.ID, a2.ID}) {
			t.Fatalf("alpha instances = %v, want [a1 a2]", got)
		}
		got := view.Instances("alpha")[0]
		if got.Service != "alpha" || got.Addr != a1.Addr || got.Version != "v1" || got.Meta["zone"] != "z1" {
			t.Errorf("alpha a1 = %+v, want the registered fields", got)
		}
		if got.Started.IsZero() || got.Heartbeat.IsZero() {
			t.Errorf("alpha a1 = %+v, want Started and Heartbeat set", got)
		}
		services := view.Services()
		if len(services) != 2 || len(services["alpha"]) != 2 || !slices.Equal(ids(services["beta"]), []string{b1.ID}) {
			t.Errorf("services = %v, want alpha [a1 a2] and beta [b1]", services)
		}

		// Round robin over the sorted instances.
		var picked []string
		for range 4 {
			inst, err := view.Resolve(t.Context(), "alpha")
			if err != nil {
				t.Fatalf("resolve alpha: %v", err)
			}
			picked = append(picked, inst.ID)
		}
		if picked[0] == picked[1] || picked[0] != picked[2] || picked[1] != picked[3] {
			t.Errorf("resolve alpha picked %v, want alternation", picked)
		}
		if inst, err := view.Resolve(t.Context(), "beta"); err != nil || inst.Addr != b1.Addr {
			t.Errorf("resolve beta = %+v, %v, want %s", inst, err, b1.Addr)
		}
	})
}

func TestRegistry_WatcherSeesLaterRegistrationAndDeregistration(t *testing.T) {
	forEachServer(t, func(t *testing.T, js jetstream.JetStream) {
		cfg := testConfig(t, js)
		owner := newRegistry(t, js, cfg)
		view := newRegistry(t, js, cfg)

		deregister, err := owner.Register(t.Context(), Instance{Service: "alpha", Addr: "127.0.0.1:1001"})
		if err != nil {
			t.Fatalf("register: %v", err)
		}
		keep := register(t, owner, Instance{Service: "alpha", ID: "keep", Addr: "127.0.0.1:1002"})
		eventually(t, 10*time.Second, func() string {
			if n := len(view.Instances("alpha")); n != 2 {
				return fmt.Sprintf("view has %d alpha instances, want 2", n)
			}
			return ""
		})

		if err := deregister(t.Context()); err != nil {
			t.Fatalf("deregister: %v", err)
		}
		// Updates arrive in order: once a later registration is seen, the
		// deletion was applied, long before the key could have expired.
		register(t, owner, Instance{Service: "beta", ID: "later", Addr: "127.0.0.1:2001"})
		eventually(t, 10*time.Second, func() string {
			if len(view.Instances("beta")) == 0 {
				return "later registration not in the view"
			}
			return ""
		})
		if got := ids(view.Instances("alpha")); !slices.Equal(got, []string{keep.ID}) {
			t.Fatalf("view has alpha %v after deregister, want only %s", got, keep.ID)
		}
		if err := deregister(t.Context()); err != nil {
			t.Errorf("second deregister: %v", err)
		}
	})
}

func TestRegistry_HeartbeatsKeepInstanceAlivePastTTL(t *testing.T) {
	forEachServer(t, func(t *testing.T, js jetstream.JetStream) {
		cfg := testConfig(t, js)
		owner := newRegistry(t, js, cfg)
		view := newRegistry(t, js, cfg)
		register(t, owner, Instance{Service: "alpha", ID: "a1", Addr: "127.0.0.1:1001"})

		seen := false
		eventually(t, 10*time.Second, func() string {
			list := view.Instances("alpha")
			if len(list) != 1 {
				if seen {
					t.Fatal("a1 disappeared while it was heartbeating")
				}
				return fmt.Sprintf("view has alpha %v, want a1", ids(list))
			}
			seen = true
			if alive := list[0].Heartbeat.Sub(list[0].Started); alive <= 2*testTTL {
				return fmt.Sprintf("a1 heartbeats cover %s, want more than twice the TTL", alive)
			}
			return ""
		})
	})
}

func TestRegistry_CrashedInstanceDisappearsAfterTTL(t *testing.T) {
	forEachServer(t, func(t *testing.T, js jetstream.JetStream) {
		cfg := testConfig(t, js)
		owner := newRegistry(t, js, cfg)
		view := newRegistry(t, js, cfg)

		ctx, crash := context.WithCancel(t.Context())
		if _, err := owner.Register(ctx, Instance{Service: "alpha", ID: "crashed", Addr: "127.0.0.1:1001"}); err != nil {
			t.Fatalf("register: %v", err)
		}
		register(t, owner, Instance{Service: "alpha", ID: "healthy", Addr: "127.0.0.1:1002"})
		eventually(t, 10*time.Second, func() string {
			if n := len(view.Instances("alpha")); n != 2 {
				return fmt.Sprintf("view has %d alpha instances, want 2", n)
			}
			return ""
		})

		crash() // heartbeats stop; the key is not deleted
		eventually(t, 10*time.Second, func() string {
			if got := ids(view.Instances("alpha")); !slices.Equal(got, []string{"healthy"}) {
				return fmt.Sprintf("view has alpha %v, want only healthy", got)
			}
			return ""
		})
	})
}

func TestRegistry_IgnoresInstanceWithStaleHeartbeat(t *testing.T) {
	forEachServer(t, func(t *testing.T, js jetstream.JetStream) {
		cfg := testConfig(t, js)
		view := newRegistry(t, js, cfg)

		// A value the bucket still holds but whose writer stopped long ago, as
		// after a server that expires keys without telling watchers.
		stale, err := json.Marshal(Instance{Service: "alpha", ID: "stale", Addr: "127.0.0.1:1001",
			Started: time.Now().Add(-time.Hour), Heartbeat: time.Now().Add(-time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := view.kv.Put(t.Context(), "alpha.stale", stale); err != nil {
			t.Fatalf("put stale value: %v", err)
		}
		// The watcher delivers in order, so once fresh is seen, stale was
		// applied; the bucket's own expiry of stale is still a TTL away.
		register(t, view, Instance{Service: "alpha", ID: "fresh", Addr: "127.0.0.1:1002"})
		eventually(t, 10*time.Second, func() string {
			if !slices.Contains(ids(view.Instances("alpha")), "fresh") {
				return "fresh not in the view"
			}
			return ""
		})
		if got := ids(view.Instances("alpha")); !slices.Equal(got, []string{"fresh"}) {
			t.Fatalf("view has alpha %v, want only fresh", got)
		}
		for range 3 {
			if inst, err := view.Resolve(t.Context(), "alpha"); err != nil || inst.ID != "fresh" {
				t.Fatalf("resolve alpha = %+v, %v, want fresh", inst, err)
			}
		}
	})
}

func TestRegistry_LeftoversFromCrashedRunAreNotResolvedAfterRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Bucket: "discovery_restart", TTL: testTTL}

	// First run: an instance registers, then the whole process dies.
	srv := startServer(t, dir)
	js := connect(t, srv.ClientURL())
	first, err := NewRegistry(t.Context(), js, cfg)
	if err != nil {
		t.Fatalf("new registry: %v", err)
	}
	if _, err := first.Register(t.Context(), Instance{Service: "alpha", ID: "old", Addr: "127.0.0.1:1001"}); err != nil {
		t.Fatalf("register: %v", err)
	}
	first.Close()
	srv.Shutdown()
	srv.WaitForShutdown()

	// Second run on the same store.
	js = connect(t, startServer(t, dir).ClientURL())
	view := newRegistry(t, js, cfg)
	register(t, view, Instance{Service: "alpha", ID: "new", Addr: "127.0.0.1:1002"})
	eventually(t, 10*time.Second, func() string {
		if got := ids(view.Instances("alpha")); !slices.Equal(got, []string{"new"}) {
			return fmt.Sprintf("view has alpha %v, want only new", got)
		}
		return ""
	})
	if inst, err := view.Resolve(t.Context(), "alpha"); err != nil || inst.ID != "new" {
		t.Fatalf("resolve alpha = %+v, %v, want new", inst, err)
	}
}

func TestRegistry_ResolveWithoutInstanceFails(t *testing.T) {
	forEachServer(t, func(t *testing.T, js jetstream.JetStream) {
		view := newRegistry(t, js, testConfig(t, js))
		register(t, view, Instance{Service: "alpha", Addr: "127.0.0.1:1001"})

		_, err := view.Resolve(t.Context(), "missing")
		if !errors.Is(err, ErrNoInstance) {
			t.Fatalf("resolve missing: err = %v, want ErrNoInstance", err)
		}
		if !strings.Contains(err.Error(), "missing") {
			t.Errorf("error %q does not name the service", err)
		}
	})
}

func TestRegistry_RegisterRejectsInvalidInstance(t *testing.T) {
	js := connect(t, startServer(t, t.TempDir()).ClientURL())
	r := newRegistry(t, js, testConfig(t, js))
	for name, inst := range map[string]Instance{
		"no service":       {Addr: "127.0.0.1:1"},
		"dot in service":   {Service: "al.pha", Addr: "127.0.0.1:1"},
		"wildcard in id":   {Service: "alpha", ID: "a*", Addr: "127.0.0.1:1"},
		"no address":       {Service: "alpha"},
		"space in service": {Service: "al pha", Addr: "127.0.0.1:1"},
	} {
		if _, err := r.Register(t.Context(), inst); err == nil {
			t.Errorf("%s: Register(%+v) succeeded, want an error", name, inst)
		}
	}
	if s := r.Services(); len(s) != 0 {
		t.Errorf("services = %v after rejected registrations, want none", s)
	}
}

func TestNewRegistry_RejectsTTLBelowOneSecond(t *testing.T) {
	js := connect(t, startServer(t, t.TempDir()).ClientURL())
	if _, err := NewRegistry(t.Context(), js, Config{Bucket: "short", TTL: 500 * time.Millisecond}); err == nil {
		t.Fatal("NewRegistry accepted a 500ms TTL")
	}
}

func TestForget_DropsEveryRegistration(t *testing.T) {
	forEachServer(t, func(t *testing.T, js jetstream.JetStream) {
		cfg := testConfig(t, js)
		r := newRegistry(t, js, cfg)
		register(t, r, Instance{Service: "svc", ID: "a", Addr: "127.0.0.1:1"})
		r.Close()
		if err := Forget(context.Background(), js, cfg.Bucket); err != nil {
			t.Fatal(err)
		}
		if err := Forget(context.Background(), js, cfg.Bucket); err != nil {
			t.Fatalf("forgetting a missing bucket: %v", err)
		}
		fresh := newRegistry(t, js, cfg)
		if got := fresh.Instances("svc"); len(got) != 0 {
			t.Fatalf("instances after Forget: %+v", got)
		}
	})
}

// The context of NewRegistry bounds its start only: once it ends, the view
// still follows registrations.
func TestRegistry_ViewOutlivesTheContextItStartedWith(t *testing.T) {
	forEachServer(t, func(t *testing.T, js jetstream.JetStream) {
		cfg := testConfig(t, js)
		owner := newRegistry(t, js, cfg)
		ctx, cancel := context.WithCancel(t.Context())
		view, err := NewRegistry(ctx, js, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(view.Close)
		cancel() // as when a start-up deadline is released

		register(t, owner, Instance{Service: "alpha", ID: "after", Addr: "127.0.0.1:1001"})
		eventually(t, 10*time.Second, func() string {
			if len(view.Instances("alpha")) != 1 {
				return "a registration made after the start context ended is not in the view"
			}
			return ""
		})
	})
}

package e2e

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mercato-shop/mercato/shop"
	"github.com/mercato-shop/mercato/test/invariant"
)

// instanceJSON is one live instance as /admin/services shows it.
type instanceJSON struct {
	Instance struct {
		ID      string `json:"id"`
		Version string `json:"version"`
	} `json:"instance"`
	Ready bool   `json:"ready"`
	Calls uint64 `json:"calls"` // made by the gateway's balancer
}

// instanceList returns the live instances of service from /admin/services.
func (c client) instanceList(admin, service string) []instanceJSON {
	c.t.Helper()
	var got struct {
		Services []struct {
			Name      string         `json:"name"`
			Instances []instanceJSON `json:"instances"`
		} `json:"services"`
	}
	r := c.do("GET", "/admin/services", admin, nil)
	if r.status != http.StatusOK {
		c.t.Fatalf("admin/services: %d %s", r.status, r.body)
	}
	r.json(c.t, &got)
	for _, svc := range got.Services {
		if svc.Name == service {
			return svc.Instances
		}
	}
	return nil
}

// instances lists the live instance ids of service, with whether each is
// ready.
func (c client) instances(admin, service string) map[string]bool {
	c.t.Helper()
	out := map[string]bool{}
	for _, inst := range c.instanceList(admin, service) {
		out[inst.Instance.ID] = inst.Ready
	}
	return out
}

// One of three payment instances is killed while orders flow: no order is
// lost, the instance leaves every view within the registry's TTL, and the
// errors callers see are bounded by what outlier ejection lets through.
func TestShop_SurvivesAKilledPaymentInstance(t *testing.T) {
	data := t.TempDir()
	s, c := startShop(t, data, func(cfg *shop.Config) { cfg.Replicas = map[string]int{"payment": 3} })
	t.Cleanup(func() { stopShop(t, s) })
	admin, ann := c.admin(), c.signUp("Ann")
	initial, err := invariant.Snapshot(context.Background(), data)
	if err != nil {
		t.Fatal(err)
	}
	var victim string
	deadline := time.Now().Add(30 * time.Second)
	for victim == "" {
		all := c.instances(admin, "payment")
		ready := 0
		for id, ok := range all {
			if ok {
				ready++
				victim = id
			}
		}
		if len(all) != 3 || ready != 3 {
			victim = ""
			if time.Now().After(deadline) {
				t.Fatalf("payment instances %v", all)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// Orders rotate over the well-stocked products, so the run never sells out.
	var products []string
	for _, p := range c.catalog() {
		if p.Available >= 1000 {
			products = append(products, p.ID)
		}
	}
	var next atomic.Int64
	var (
		mu        sync.Mutex
		placed    []string
		readErrs  atomic.Int64
		stop      = make(chan struct{})
		wg        sync.WaitGroup
		lastOrder atomic.Value
	)
	const workers = 2
	for range workers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, o := c.placeOrder(ann, products[int(next.Add(1))%len(products)], 1, "tok_ok")
				if r.status != http.StatusAccepted {
					t.Errorf("place: %d %s", r.status, r.body)
					return
				}
				mu.Lock()
				placed = append(placed, o.ID)
				mu.Unlock()
				lastOrder.Store(o.ID)
				// A read that goes to a payment instance through the balancer.
				if r := c.do("GET", "/api/payments?order_id="+o.ID, ann, nil); r.status != http.StatusOK {
					readErrs.Add(1)
				}
			}
		})
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(placed) }
	waitPlaced := func(n int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for count() < n {
			if time.Now().After(deadline) {
				t.Fatalf("only %d orders placed, want %d", count(), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitPlaced(20)

	if r := c.do("POST", "/admin/chaos/payment/"+victim+"/kill", admin, nil); r.status != http.StatusAccepted {
		t.Fatalf("kill: %d %s", r.status, r.body)
	}
	// Gone from discovery within the TTL (15 s), though it never said goodbye.
	deadline = time.Now().Add(30 * time.Second)
	for {
		if _, ok := c.instances(admin, "payment")[victim]; !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the killed instance %s is still listed", victim)
		}
		time.Sleep(200 * time.Millisecond)
	}
	waitPlaced(count() + 20) // orders keep flowing on the two left
	close(stop)
	wg.Wait()

	rep := invariant.Eventually(t, data, initial, 60*time.Second)
	if rep.Orders["CONFIRMED"] != len(placed) {
		t.Fatalf("%d orders placed, outcome %v", len(placed), rep.Orders)
	}
	// Each ejection lets at most five calls fail before it (a second one
	// may come when the first ends before the registration expires), plus
	// what was in flight.
	if n := readErrs.Load(); n > 2*5+workers {
		t.Fatalf("%d reads failed around the kill", n)
	}
	t.Logf("%d orders, %d failed reads around the kill", len(placed), readErrs.Load())
}

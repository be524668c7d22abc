package e2e

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/mercato-shop/mercato/shop"
	"github.com/mercato-shop/mercato/test/invariant"
)

// The broker goes away for a few seconds while orders flow, and comes back:
// every order settles and every invariant holds.
func TestShop_SurvivesABrokerOutage(t *testing.T) {
	data := t.TempDir()
	s, c := startShop(t, data, func(cfg *shop.Config) {
		cfg.SagaRetry = 500 * time.Millisecond
	})
	t.Cleanup(func() { stopShop(t, s) })
	initial, err := invariant.Snapshot(context.Background(), data)
	if err != nil {
		t.Fatal(err)
	}
	ann := c.signUp("Ann")
	mug := c.catalog()["MUG-001"]

	var (
		mu     sync.Mutex
		placed []string
		wg     sync.WaitGroup
	)
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				// During the outage the order service may answer 5xx: the
				// client retries later, as a client would.
				r, o := c.placeOrder(ann, mug.ID, 1, "tok_ok")
				if r.status == 202 {
					mu.Lock()
					placed = append(placed, o.ID)
					mu.Unlock()
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	waitPlaced := func(n int) {
		deadline := time.Now().Add(20 * time.Second)
		for {
			mu.Lock()
			got := len(placed)
			mu.Unlock()
			if got >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("only %d orders placed, want %d", got, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitPlaced(10)
	s.StopBroker()
	time.Sleep(3 * time.Second) // the outage
	if err := s.StartBroker(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	before := len(placed)
	mu.Unlock()
	waitPlaced(before + 10) // orders flow again
	close(stop)
	wg.Wait()

	rep := invariant.Eventually(t, data, initial, 60*time.Second)
	if rep.Orders["CONFIRMED"] < len(placed) {
		t.Fatalf("%d orders placed, outcome %v", len(placed), rep.Orders)
	}
}

package e2e

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/test/invariant"
)

// A mixed run: both saga modes, paid and declined orders, cancellations,
// and a provider that fails for a while. Once quiet, every invariant holds.
// Its breaker stays closed: with half of the charges failing it would
// open, and the charges it caught would wait for their redeliveries,
// minutes apart by then.
func TestShop_InvariantsHoldAfterAMixedRun(t *testing.T) {
	data := t.TempDir()
	s, c := startShop(t, data, withoutProviderBreaker(t))
	t.Cleanup(func() { stopShop(t, s) })
	initial, err := invariant.Snapshot(context.Background(), data)
	if err != nil {
		t.Fatal(err)
	}
	tokens := []string{c.signUp("Ann"), c.signUp("Bob"), c.signUp("Cem")}
	var ids []string
	for _, p := range c.catalog() {
		ids = append(ids, p.ID)
	}

	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			tok := tokens[w%len(tokens)]
			for i := range 10 {
				pay := "tok_ok"
				if i%4 == 3 {
					pay = "tok_decline"
				}
				saga := "orchestrated"
				if (w+i)%2 == 0 {
					saga = "choreographed"
				}
				r := c.do("POST", "/api/orders", tok, map[string]any{
					"items":   []map[string]any{{"product_id": ids[rand.IntN(len(ids))], "quantity": 1 + rand.IntN(2)}},
					"saga":    saga,
					"payment": map[string]string{"token": pay},
				})
				if r.status == 409 { // the scarce product sold out
					continue
				}
				var o orderJSON
				r.json(t, &o)
				if i%5 == 4 {
					c.do("POST", "/api/orders/"+o.ID+"/cancel", tok, nil)
				}
			}
		})
	}
	// Meanwhile the provider fails for a while.
	s.Provider().SetFailureRate(0.5)
	time.Sleep(300 * time.Millisecond)
	s.Provider().SetFailureRate(0)
	wg.Wait()

	rep := invariant.Eventually(t, data, initial, 30*time.Second)
	if rep.Orders["CONFIRMED"] == 0 || rep.Orders["CANCELLED"] == 0 {
		t.Fatalf("the run should have confirmed and cancelled orders: %v", rep.Orders)
	}
	// The provider's failures were retried, never given up on.
	dls, err := invariant.DeadLetters(context.Background(), s.BrokerURL())
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 0 {
		t.Fatalf("%d dead letters, first: %s", len(dls), dls[0].Reason)
	}
	t.Logf("orders: %v", rep.Orders)
}

// The checker itself must see a broken invariant.
func TestInvariant_CatchesViolations(t *testing.T) {
	data := t.TempDir()
	s, c := startShop(t, data)
	t.Cleanup(func() { stopShop(t, s) })
	initial, err := invariant.Snapshot(context.Background(), data)
	if err != nil {
		t.Fatal(err)
	}
	ann := c.signUp("Ann")
	mug := c.catalog()["MUG-001"]
	_, o := c.placeOrder(ann, mug.ID, 1, "tok_ok")
	c.settle(ann, o.ID)
	invariant.Eventually(t, data, initial, 10*time.Second)

	inv, err := storage.Open(context.Background(), storage.SQLiteDSN(data, "inventory"))
	if err != nil {
		t.Fatal(err)
	}
	defer inv.Close()
	// Stock appears from nowhere.
	if _, err := inv.ExecContext(context.Background(), `UPDATE products SET available = available + 1 WHERE id = $1`, mug.ID); err != nil {
		t.Fatal(err)
	}
	rep, err := invariant.Check(context.Background(), data, initial)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Violations) != 1 {
		t.Fatalf("want one violation, got %s", rep)
	}
	t.Log(rep.Violations[0])
}

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mercato-shop/mercato/test/invariant"
)

// duplicate republishes every command and event twice more, with new
// message ids so the broker's dedupe lets them through: every consumer sees
// each message three times.
func duplicate(t *testing.T, url string) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	// Drain: copies in flight are sent before the connection closes.
	t.Cleanup(func() { _ = nc.Drain() })
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	const copyHeader = "X-Test-Copy"
	for _, subject := range []string{"inventory.>", "payment.>", "order.>"} {
		_, err := nc.Subscribe(subject, func(m *nats.Msg) {
			if m.Header.Get(copyHeader) != "" {
				return
			}
			for i := range 2 {
				c := nats.NewMsg(m.Subject)
				for k, v := range m.Header {
					c.Header[k] = v
				}
				c.Header.Set(copyHeader, "1")
				c.Header.Set(nats.MsgIdHdr, fmt.Sprintf("%s-copy-%d", m.Header.Get(nats.MsgIdHdr), i))
				c.Data = m.Data
				if _, err := js.PublishMsg(c); err != nil && !nc.IsClosed() && !nc.IsDraining() {
					t.Errorf("duplicate %s: %v", m.Subject, err)
				}
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// Every command and event delivered three times to every consumer, in both
// saga modes with declines and cancellations: every effect happens once.
func TestShop_EveryEffectOnceUnderDuplicateDeliveries(t *testing.T) {
	data := t.TempDir()
	s, c := startShop(t, data)
	t.Cleanup(func() { stopShop(t, s) })
	duplicate(t, s.BrokerURL())
	initial, err := invariant.Snapshot(context.Background(), data)
	if err != nil {
		t.Fatal(err)
	}
	ann := c.signUp("Ann")
	var ids []string
	for sku, p := range c.catalog() {
		if sku != "KBD-001" {
			ids = append(ids, p.ID)
		}
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 8 {
				pay := "tok_ok"
				if i%3 == 2 {
					pay = "tok_decline"
				}
				saga := []string{"orchestrated", "choreographed"}[(w+i)%2]
				r := c.do("POST", "/api/orders", ann, map[string]any{
					"items":   []map[string]any{{"product_id": ids[rand.IntN(len(ids))], "quantity": 1}},
					"saga":    saga,
					"payment": map[string]string{"token": pay},
				})
				var o orderJSON
				r.json(t, &o)
				if i%4 == 3 {
					c.settle(ann, o.ID)
					c.do("POST", "/api/orders/"+o.ID+"/cancel", ann, nil)
				}
			}
		})
	}
	wg.Wait()
	rep := invariant.Eventually(t, data, initial, 30*time.Second)
	captured := rep.Payments["CAPTURED"] + rep.Payments["REFUNDED"]
	if got := s.Provider().Captures(); got != captured {
		t.Fatalf("provider captured %d times for %d paid orders: %s", got, captured, rep)
	}
	if got := s.Provider().Refunds(); got != rep.Payments["REFUNDED"] {
		t.Fatalf("provider refunded %d times for %d refunded payments: %s", got, rep.Payments["REFUNDED"], rep)
	}
	if rep.Orders["CONFIRMED"] == 0 || rep.Orders["CANCELLED"] == 0 || rep.Payments["REFUNDED"] == 0 {
		t.Fatalf("the run should confirm, cancel and refund: %s", rep)
	}
	t.Logf("%s", rep)
}

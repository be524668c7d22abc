package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/mercato-shop/mercato/shop"
	"github.com/mercato-shop/mercato/test/invariant"
)

func TestShop_RunsReplicas(t *testing.T) {
	data := t.TempDir()
	s, c := startShop(t, data, func(cfg *shop.Config) { cfg.Replicas = map[string]int{"payment": 3, "inventory": 2} })
	t.Cleanup(func() { stopShop(t, s) })
	admin, ann := c.admin(), c.signUp("Ann")
	initial, err := invariant.Snapshot(context.Background(), data)
	if err != nil {
		t.Fatal(err)
	}

	type instance struct {
		Instance struct {
			ID string `json:"id"`
		} `json:"instance"`
		Calls uint64 `json:"calls"`
		Ready bool   `json:"ready"`
	}
	services := func() map[string][]instance {
		var got struct {
			Services []struct {
				Name      string     `json:"name"`
				Instances []instance `json:"instances"`
			} `json:"services"`
		}
		r := c.do("GET", "/admin/services", admin, nil)
		if r.status != http.StatusOK {
			t.Fatalf("admin/services: %d %s", r.status, r.body)
		}
		r.json(t, &got)
		out := map[string][]instance{}
		for _, svc := range got.Services {
			out[svc.Name] = svc.Instances
		}
		return out
	}
	if got := services(); len(got["payment"]) != 3 || len(got["inventory"]) != 2 || len(got["order"]) != 1 {
		t.Fatalf("instances: payment %d, inventory %d, order %d", len(got["payment"]), len(got["inventory"]), len(got["order"]))
	}

	// Orders flow through the replicated queues and settle once each.
	mug := c.catalog()["MUG-001"]
	var ids []string
	for range 20 {
		_, o := c.placeOrder(ann, mug.ID, 1, "tok_ok")
		ids = append(ids, o.ID)
	}
	for _, id := range ids {
		if got := c.settle(ann, id); got.Status != "CONFIRMED" {
			t.Fatalf("order %s: %s", id, got.Status)
		}
	}
	// Calls through the gateway spread over every payment instance.
	for _, id := range ids {
		if ps := c.payments(ann, id); len(ps) != 1 || ps[0].Status != "CAPTURED" {
			t.Fatalf("payments of %s: %+v", id, ps)
		}
	}
	for _, inst := range services()["payment"] {
		if inst.Calls == 0 {
			t.Fatalf("payment instance %s got no call of %d", inst.Instance.ID, len(ids))
		}
	}
	rep := invariant.Eventually(t, data, initial, 30*time.Second)
	if rep.Orders["CONFIRMED"] != len(ids) {
		t.Fatalf("outcome %v", rep.Orders)
	}
}

func TestShop_RefusesReplicasItCannotRun(t *testing.T) {
	for _, r := range []map[string]int{{"gateway": 2}, {"payment": 0}, {"payment": 99}, {"nosuch": 2}} {
		if _, err := shop.Start(t.Context(), shop.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), Replicas: r}); err == nil {
			t.Fatalf("replicas %v accepted", r)
		}
	}
}

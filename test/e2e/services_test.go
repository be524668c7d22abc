package e2e

import (
	"net/http"
	"testing"
	"time"
)

func TestShop_AdminSeesEveryServiceInstance(t *testing.T) {
	s, c := startShop(t, t.TempDir())
	t.Cleanup(func() { stopShop(t, s) })
	admin, ann := c.admin(), c.signUp("Ann")

	c.expectProblem(c.do("GET", "/admin/services", ann, nil), http.StatusForbidden, "services for a customer")

	// Calls through the gateway's balancer show in its counters.
	c.catalog()
	var got struct {
		Services []struct {
			Name      string `json:"name"`
			Instances []struct {
				Instance struct {
					ID        string    `json:"id"`
					Addr      string    `json:"addr"`
					Heartbeat time.Time `json:"heartbeat"`
				} `json:"instance"`
				Calls          uint64 `json:"calls"`
				Ready          bool   `json:"ready"`
				HeartbeatAgeMs int64  `json:"heartbeat_age_ms"`
			} `json:"instances"`
		} `json:"services"`
	}
	// Consumers of streams whose owners start later are waited for in the
	// background: every instance becomes ready shortly after the start.
	var body string
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := c.do("GET", "/admin/services", admin, nil)
		if r.status != http.StatusOK {
			t.Fatalf("admin/services: %d %s", r.status, r.body)
		}
		r.json(t, &got)
		body = string(r.body)
		allReady := true
		for _, svc := range got.Services {
			for _, inst := range svc.Instances {
				allReady = allReady && inst.Ready
			}
		}
		if allReady {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not every instance is ready: %s", body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	seen := map[string]bool{}
	for _, svc := range got.Services {
		seen[svc.Name] = true
		if len(svc.Instances) == 0 {
			t.Fatalf("%s listed without instances", svc.Name)
		}
		for _, inst := range svc.Instances {
			if inst.Instance.Addr == "" || inst.Instance.ID == "" || inst.Instance.Heartbeat.IsZero() || inst.HeartbeatAgeMs < 0 {
				t.Fatalf("%s instance %+v in %s", svc.Name, inst, body)
			}
			if svc.Name == "inventory" && inst.Calls == 0 {
				t.Fatalf("the catalog read through the gateway is not counted: %+v", inst)
			}
		}
	}
	for _, name := range []string{"customer", "inventory", "order", "payment", "gateway"} {
		if !seen[name] {
			t.Fatalf("%s missing from %s", name, body)
		}
	}
}

package gateway

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mercato-shop/mercato/platform/discovery"
	"github.com/mercato-shop/mercato/platform/web"
)

// Self is the service name of routes the gateway answers itself (its admin
// views) instead of proxying.
const Self = "gateway"

// instanceLister is the registry's view of every live instance.
type instanceLister interface {
	Services() map[string][]discovery.Instance
}

// balancerStats is what the gateway's balancer knows of a service's instances.
type balancerStats interface {
	Stats(service string) []discovery.InstanceStats
}

// InstanceView is one instance as GET /admin/services shows it.
type InstanceView struct {
	discovery.InstanceStats
	HeartbeatAgeMillis int64  `json:"heartbeat_age_ms"`
	Ready              bool   `json:"ready"`
	ReadyError         string `json:"ready_error,omitempty"`
}

// ServiceView is one service and its live instances.
type ServiceView struct {
	Name      string         `json:"name"`
	Instances []InstanceView `json:"instances"`
}

// servicesHandler answers GET /admin/services: every service in discovery,
// each live instance with its last heartbeat, whether its /readyz answers
// 200 now, and the gateway's balancer counters for it (calls, failures,
// calls outstanding, ejection).
func servicesHandler(list instanceLister, stats balancerStats, client *http.Client) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		services := list.Services()
		names := make([]string, 0, len(services))
		for name := range services {
			names = append(names, name)
		}
		slices.Sort(names)
		now := time.Now()
		out := make([]ServiceView, len(names))
		var wg sync.WaitGroup
		for i, name := range names {
			byID := map[string]discovery.InstanceStats{}
			for _, st := range stats.Stats(name) {
				byID[st.Instance.ID] = st
			}
			out[i] = ServiceView{Name: name, Instances: make([]InstanceView, len(services[name]))}
			for j, inst := range services[name] {
				st, ok := byID[inst.ID]
				if !ok {
					st = discovery.InstanceStats{Instance: inst}
				}
				v := &out[i].Instances[j]
				*v = InstanceView{InstanceStats: st, HeartbeatAgeMillis: now.Sub(inst.Heartbeat).Milliseconds()}
				wg.Go(func() { v.Ready, v.ReadyError = ready(r.Context(), client, inst.Addr) })
			}
		}
		wg.Wait()
		web.WriteJSON(w, http.StatusOK, map[string]any{"services": out})
	})
}

// ready asks an instance's /readyz, briefly.
func ready(ctx context.Context, client *http.Client, addr string) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// The body names the checks that fail.
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return false, resp.Status + ": " + strings.TrimSpace(string(body))
	}
	return true, ""
}

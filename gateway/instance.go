package gateway

import (
	"io"
	"net/http"
	"strings"

	"github.com/mercato-shop/mercato/platform/discovery"
	"github.com/mercato-shop/mercato/platform/web"
)

// instanceHandler forwards a request for /admin/{what}/{service}/{instance}
// to that one instance's own admin API, at path(r): its chaos switches
// (platform/chaos) or its breakers (platform/resilience). The instance is
// found in discovery: one instance, not a balanced pick among the service's.
func instanceHandler(list instanceLister, client *http.Client, path func(r *http.Request) string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		service, id := r.PathValue("service"), r.PathValue("instance")
		var inst *discovery.Instance
		for _, i := range list.Services()[service] {
			if i.ID == id {
				inst = &i
				break
			}
		}
		if inst == nil {
			web.Error(w, r, http.StatusNotFound, "no live instance "+id+" of "+service)
			return
		}
		out, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+inst.Addr+path(r), r.Body)
		if err != nil {
			web.Error(w, r, http.StatusInternalServerError, "")
			return
		}
		for _, h := range []string{"Content-Type", web.SubjectHeader, web.RolesHeader} {
			if v := r.Header.Get(h); v != "" {
				out.Header.Set(h, v)
			}
		}
		resp, err := client.Do(out)
		if err != nil {
			web.Error(w, r, http.StatusBadGateway, "the instance did not answer")
			return
		}
		defer resp.Body.Close()
		if v := resp.Header.Get("Content-Type"); v != "" {
			w.Header().Set("Content-Type", v)
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	})
}

// chaosPath maps /admin/chaos/{service}/{instance}[/kill] to the
// instance's /admin/chaos[/kill].
func chaosPath(r *http.Request) string {
	if strings.HasSuffix(r.URL.Path, "/kill") {
		return "/admin/chaos/kill"
	}
	return "/admin/chaos"
}

// breakersPath maps /admin/breakers/{service}/{instance} to the instance's
// /admin/breakers.
func breakersPath(*http.Request) string { return "/admin/breakers" }

// metricsPath maps /admin/metrics/{service}/{instance} to the instance's
// /metrics.
func metricsPath(*http.Request) string { return "/metrics" }

package gateway

import (
	"io"
	"net/http"
	"strings"

	"github.com/mercato-shop/mercato/platform/discovery"
	"github.com/mercato-shop/mercato/platform/web"
)

// chaosHandler forwards /admin/chaos/{service}/{instance}[/kill] to that
// instance's own chaos API (platform/chaos), found in discovery: one
// instance's switches, not a balanced pick among the service's.
func chaosHandler(list instanceLister, client *http.Client) http.Handler {
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
		path := "/admin/chaos"
		if strings.HasSuffix(r.URL.Path, "/kill") {
			path += "/kill"
		}
		out, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+inst.Addr+path, r.Body)
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
		for _, h := range []string{"Content-Type"} {
			if v := resp.Header.Get(h); v != "" {
				w.Header().Set(h, v)
			}
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	})
}

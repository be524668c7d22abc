package gateway

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/mercato-shop/mercato/platform/discovery"
	"github.com/mercato-shop/mercato/platform/web"
)

// Routes to the service "gateway" are answered by the gateway's own
// handlers, after the same auth as any route, and never proxied.
func TestGateway_AnswersItsOwnRoutes(t *testing.T) {
	keys := newSigner(t, "k1")
	cfg, err := ParseConfig([]byte(jwtLines + `routes:
  - path: /admin/services
    methods: [GET]
    service: gateway
    auth: jwt
    roles: [admin]
  - path: /admin/missing
    methods: [GET]
    service: gateway
    auth: none
`))
	if err != nil {
		t.Fatal(err)
	}
	up := newUpstream(t)
	self := map[string]http.Handler{"/admin/services": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		web.WriteJSON(w, http.StatusOK, map[string]string{"subject": r.Header.Get(web.SubjectHeader)})
	})}
	gw := New(cfg, discovery.Transport(discovery.Static(map[string][]string{"gateway": {up.addr()}}), nil), keys.jwksKeyfunc(t), slog.New(slog.DiscardHandler), self)
	srv := httptest.NewServer(web.Correlate(gw))
	defer srv.Close()

	get := func(path, token string) (*http.Response, []byte) {
		req := newRequest(t, "GET", srv.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		return do(t, srv.Client(), req)
	}
	if resp, body := get("/admin/services", "Bearer"+keys.sign(t, claimsFor("c-1", "customer"))); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("garbled token: %d %s", resp.StatusCode, body)
	}
	if resp, body := get("/admin/services", keys.sign(t, claimsFor("c-1", "customer"))); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("customer: %d %s", resp.StatusCode, body)
	}
	resp, body := get("/admin/services", keys.sign(t, claimsFor("a-1", "admin")))
	var got map[string]string
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &got) != nil || got["subject"] != "a-1" {
		t.Fatalf("admin: %d %s", resp.StatusCode, body)
	}
	if resp, body := get("/admin/missing", ""); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a gateway route without a handler: %d %s", resp.StatusCode, body)
	}
	up.wantNothing(t)
}

type listed map[string][]discovery.Instance

func (l listed) Services() map[string][]discovery.Instance { return l }

type noStats struct{}

func (noStats) Stats(string) []discovery.InstanceStats { return nil }

func TestServicesHandler_ProbesEachInstance(t *testing.T) {
	readyz := func(code int) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/readyz" {
				t.Errorf("probe of %s", r.URL.Path)
			}
			w.WriteHeader(code)
			w.Write([]byte(`{"status":"draining"}`))
		}))
		t.Cleanup(srv.Close)
		return srv.Listener.Addr().String()
	}
	now := time.Now()
	list := listed{
		"order": {
			{Service: "order", ID: "o-1", Addr: readyz(http.StatusOK), Heartbeat: now},
			{Service: "order", ID: "o-2", Addr: readyz(http.StatusServiceUnavailable), Heartbeat: now},
			{Service: "order", ID: "o-3", Addr: closedAddr(t), Heartbeat: now},
		},
	}
	rec := httptest.NewRecorder()
	servicesHandler(list, noStats{}, http.DefaultClient).ServeHTTP(rec, httptest.NewRequest("GET", "/admin/services", nil))
	var got struct {
		Services []ServiceView `json:"services"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || len(got.Services) != 1 || len(got.Services[0].Instances) != 3 {
		t.Fatalf("%d %s (%v)", rec.Code, rec.Body, err)
	}
	for _, inst := range got.Services[0].Instances {
		want := inst.Instance.ID == "o-1"
		if inst.Ready != want || (want == (inst.ReadyError != "")) {
			t.Errorf("%s: ready %v (%s)", inst.Instance.ID, inst.Ready, inst.ReadyError)
		}
	}
}

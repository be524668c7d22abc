package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mercato-shop/mercato/platform/discovery"
	"github.com/mercato-shop/mercato/platform/web"
)

// reloadable starts a reloader on routes in front of upstream addr, with
// its admin handler at /admin/routes.
func reloadable(t *testing.T, routes, addr string) (*Reloader, string) {
	t.Helper()
	cfg, err := ParseConfig([]byte(routes))
	if err != nil {
		t.Fatal(err)
	}
	transport := discovery.Transport(discovery.Static(map[string][]string{"customer": {addr}}), nil)
	keys := newSigner(t, "k1")
	var rl *Reloader
	self := map[string]http.Handler{"/admin/routes": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { rl.Handler().ServeHTTP(w, r) })}
	rl = NewReloader(cfg, func(cfg Config) *Gateway {
		return New(cfg, transport, keys.jwksKeyfunc(t), slog.New(slog.DiscardHandler), self)
	}, nil)
	t.Cleanup(func() { _ = rl.Close() })
	url, _ := startServer(t, web.Correlate(rl))
	return rl, url
}

const reloadRoutes = jwtLines + `ratelimit:
  default: 3/hour
routes:
  - path: /admin/routes
    methods: [GET, PUT]
    service: gateway
    auth: none
    ratelimit: off
  - path: /old
    methods: [GET]
    service: customer
    auth: none
`

func get(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// A request in flight finishes on the routes it started with; the next
// ones take the new routes; allowances carry over.
func TestReloader_SwapsRoutesWithoutDroppingARequest(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var once, released sync.Once
	letGo := func() { released.Do(func() { close(release) }) }
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/old" {
			once.Do(func() { close(entered); <-release })
		}
		w.Write([]byte("ok"))
	}))
	t.Cleanup(up.Close)
	t.Cleanup(letGo) // runs first: the upstream's Close waits for the held request
	rl, url := reloadable(t, reloadRoutes, strings.TrimPrefix(up.URL, "http://"))

	inFlight := make(chan int, 1)
	go func() {
		resp, err := http.Get(url + "/old")
		if err != nil {
			inFlight <- 0
			return
		}
		resp.Body.Close()
		inFlight <- resp.StatusCode
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first request never reached the upstream")
	}
	next := strings.Replace(reloadRoutes, "/old", "/new", 1)
	if _, err := rl.Load([]byte(next), "test"); err != nil {
		t.Fatal(err)
	}
	letGo()
	if st := <-inFlight; st != http.StatusOK {
		t.Fatalf("the request in flight during the reload ended %d", st)
	}
	if st := get(t, url+"/old"); st != http.StatusNotFound {
		t.Fatalf("a removed route answered %d", st)
	}
	for range 3 {
		get(t, url+"/new")
	}
	// Same rate limit settings: the allowances live on through a reload.
	if _, err := rl.Load([]byte(next+"  - path: /other\n    methods: [GET]\n    service: customer\n    auth: none\n"), "test"); err != nil {
		t.Fatal(err)
	}
	if st := get(t, url+"/new"); st != http.StatusTooManyRequests {
		t.Fatalf("after a reload the spent allowance came back: %d", st)
	}
}

func TestReloader_AdminAPI(t *testing.T) {
	up := newUpstream(t)
	_, url := reloadable(t, reloadRoutes, up.addr())
	put := func(body string) (*http.Response, []byte) {
		t.Helper()
		return do(t, http.DefaultClient, newRequest(t, http.MethodPut, url+"/admin/routes", strings.NewReader(body)))
	}
	view := func() liveView {
		t.Helper()
		_, body := do(t, http.DefaultClient, newRequest(t, http.MethodGet, url+"/admin/routes", nil))
		var v liveView
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := view(); v.Version != 1 || v.Source != "start" || len(v.Routes) != 2 || v.Routes[0].RateLimit != "off" || v.Routes[1].RateLimit != "3/hour burst 3" {
		t.Fatalf("at start: %+v", v)
	}

	// Refused files leave the routes in force, and say why.
	for bad, why := range map[string]string{
		reloadRoutes + "    cache: 0s\n":                                     "line 17",
		strings.Replace(reloadRoutes, "http://customer/", "http://evil/", 1): "jwks",
		strings.Replace(reloadRoutes, "[GET, PUT]", "[GET]", 1):              "PUT /admin/routes",
	} {
		resp, body := put(bad)
		p := wantProblem(t, resp, body, http.StatusBadRequest)
		if !strings.Contains(p.Detail, why) {
			t.Errorf("refusal %q does not name %s", p.Detail, why)
		}
	}
	if v := view(); v.Version != 1 {
		t.Fatalf("a refused file changed the routes: %+v", v)
	}

	resp, _ := put(strings.Replace(reloadRoutes, "/old", "/new", 1))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("put: %d", resp.StatusCode)
	}
	if v := view(); v.Version != 2 || v.Source != "PUT /admin/routes" || v.Routes[1].Path != "/new" {
		t.Fatalf("after the put: %+v", v)
	}
	if st := get(t, url+"/new"); st != http.StatusOK {
		t.Fatalf("the new route: %d", st)
	}
}

// A watched file is put in force when it changes; one that does not parse
// is reported and changes nothing.
func TestReloader_WatchesTheRouteFile(t *testing.T) {
	up := newUpstream(t)
	rl, url := reloadable(t, reloadRoutes, up.addr())
	path := filepath.Join(t.TempDir(), "routes.yaml")
	if err := os.WriteFile(path, []byte(reloadRoutes), 0o600); err != nil {
		t.Fatal(err)
	}
	reports := make(chan error, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		rl.Watch(ctx, path, 10*time.Millisecond, func(err error) { reports <- err })
	}()
	t.Cleanup(func() { cancel(); <-done })

	// The watcher may take its first look after a write: write until it
	// reports, each time a little differently.
	await := func(content string, wantErr bool) error {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for i := 0; ; i++ {
			if err := os.WriteFile(path, []byte(content+"# "+strconv.Itoa(i)+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-reports:
				if (err != nil) == wantErr {
					return err
				}
			case <-time.After(50 * time.Millisecond):
			case <-deadline:
				t.Fatalf("no report of a %s file", map[bool]string{false: "good", true: "broken"}[wantErr])
			}
		}
	}
	await(strings.Replace(reloadRoutes, "/old", "/new", 1), false)
	if st := get(t, url+"/new"); st != http.StatusOK {
		t.Fatalf("the route of the changed file: %d", st)
	}
	if err := await("routes: [oops\n", true); !strings.Contains(err.Error(), path) {
		t.Fatalf("a broken file: %v, want an error naming it", err)
	}
	if st := get(t, url+"/new"); st != http.StatusOK {
		t.Fatalf("after a broken file the routes in force changed: %d", st)
	}
	var refused error
	_, refused = rl.Load([]byte(strings.Replace(reloadRoutes, "[GET, PUT]", "[GET]", 1)), "test")
	if !errors.Is(refused, errReload) {
		t.Fatalf("dropping PUT /admin/routes: %v", refused)
	}
}

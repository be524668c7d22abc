package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mercato-shop/mercato/platform/web"
)

// live is the route file in force and the gateway built from it.
type live struct {
	gw       *Gateway
	cfg      Config
	version  int
	loadedAt time.Time
	source   string // "start", "PUT /admin/routes", or the file's path
}

// Reloader serves through the gateway of the route file in force and swaps
// it for a new one without dropping a request: a request runs to its end on
// the gateway it started on. The callers' rate limit allowances, the
// metrics and the self routes carry over.
type Reloader struct {
	build func(Config) *Gateway
	// Prepare, when set, adjusts every route file before it is put in
	// force, the first included (NoRateLimits).
	prepare func(Config) Config
	cur     atomic.Pointer[live]
	mu      sync.Mutex // one reload at a time
}

// NewReloader serves cfg through build(cfg) and reloads through build;
// prepare, when not nil, adjusts each route file first.
func NewReloader(cfg Config, build func(Config) *Gateway, prepare func(Config) Config) *Reloader {
	if prepare != nil {
		cfg = prepare(cfg)
	}
	r := &Reloader{build: build, prepare: prepare}
	r.cur.Store(&live{gw: build(cfg), cfg: cfg, version: 1, loadedAt: time.Now().UTC(), source: "start"})
	return r
}

// ServeHTTP implements http.Handler.
func (r *Reloader) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.cur.Load().gw.ServeHTTP(w, req)
}

// Gateway is the gateway in force.
func (r *Reloader) Gateway() *Gateway { return r.cur.Load().gw }

// Close closes the gateway in force.
func (r *Reloader) Close() error { return r.cur.Load().gw.Close() }

// errReload marks a route file the reloader refuses beyond ParseConfig's
// checks.
var errReload = errors.New("route file refused")

// Load parses data and, if it is valid, puts it in force.
func (r *Reloader) Load(data []byte, source string) (*live, error) {
	cfg, err := ParseConfig(data)
	if err != nil {
		return nil, err
	}
	if r.prepare != nil {
		cfg = r.prepare(cfg)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	prev := r.cur.Load()
	if cfg.JWT.JWKS != prev.cfg.JWT.JWKS {
		return nil, fmt.Errorf("%w: jwt.jwks changes only with a restart (the key set is fetched at start)", errReload)
	}
	if i := slices.IndexFunc(prev.cfg.Routes, func(rt Route) bool { return rt.Path == "/admin/routes" }); i >= 0 {
		was := prev.cfg.Routes[i]
		if !slices.ContainsFunc(cfg.Routes, func(rt Route) bool {
			return rt.Path == "/admin/routes" && rt.Service == Self && slices.Contains(rt.Methods, http.MethodPut) &&
				rt.Auth == was.Auth && !slices.ContainsFunc(was.Roles, func(role string) bool { return !slices.Contains(rt.Roles, role) })
		}) {
			return nil, fmt.Errorf("%w: it drops PUT /admin/routes, or the auth and roles that guard it", errReload)
		}
	}
	gw := r.build(cfg)
	gw.inherit(prev.gw, cfg.RateLimit == prev.cfg.RateLimit)
	next := &live{gw: gw, cfg: cfg, version: prev.version + 1, loadedAt: time.Now().UTC(), source: source}
	r.cur.Store(next)
	if gw.limits.store != prev.gw.limits.store {
		// Requests that started on prev use its store for their first
		// microseconds only; one that finds it closed passes unlimited.
		time.AfterFunc(5*time.Second, func() { _ = prev.gw.Close() })
	}
	return next, nil
}

// inherit takes over prev's metrics and cache and, when the rate limit settings did
// not change, its store with every caller's allowance.
func (g *Gateway) inherit(prev *Gateway, sameStore bool) {
	g.obs = prev.obs
	// The routes may have changed: what the cache holds goes, the cache
	// (and its registered metrics) stays.
	prev.cache.reset(g.cache.max)
	g.cache = prev.cache
	if sameStore {
		_ = g.closeStore()
		g.limits.store, g.closeStore = prev.limits.store, prev.closeStore
	}
}

// maxRouteFile bounds a route file sent to PUT /admin/routes.
const maxRouteFile = 1 << 20

// Handler answers GET /admin/routes with what is in force, and PUT
// /admin/routes (a route file as the body) by putting it in force. It does
// no authorization: route it to admins.
func (r *Reloader) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch req.Method {
		case http.MethodGet:
			web.WriteJSON(w, http.StatusOK, r.cur.Load().view())
		case http.MethodPut:
			data, err := io.ReadAll(http.MaxBytesReader(w, req.Body, maxRouteFile))
			if err != nil {
				web.Error(w, req, http.StatusRequestEntityTooLarge, "a route file is at most 1 MiB")
				return
			}
			next, err := r.Load(data, "PUT /admin/routes")
			if err != nil {
				web.Error(w, req, http.StatusBadRequest, err.Error())
				return
			}
			web.WriteJSON(w, http.StatusOK, next.view())
		default:
			w.Header().Set("Allow", "GET, PUT")
			web.Error(w, req, http.StatusMethodNotAllowed, "routes are read with GET and replaced with PUT")
		}
	})
}

// Watch reloads the route file at path when it changes, checking every
// interval until ctx ends. A file that does not parse leaves the routes in
// force and is reported through report.
func (r *Reloader) Watch(ctx context.Context, path string, interval time.Duration, report func(error)) {
	stamp := func() (time.Time, int64, []byte) {
		data, err := os.ReadFile(path)
		fi, serr := os.Stat(path)
		if err != nil || serr != nil {
			return time.Time{}, -1, nil
		}
		return fi.ModTime(), fi.Size(), data
	}
	mod, size, data := stamp()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m, s, d := stamp()
		// Content, not only the time: an editor's save within one tick of the
		// last may keep the modification time.
		if s < 0 || (m.Equal(mod) && s == size && bytes.Equal(d, data)) {
			continue
		}
		mod, size, data = m, s, d
		if _, err := r.Load(d, path); err != nil {
			report(fmt.Errorf("reload %s: %w", path, err))
			continue
		}
		report(nil)
	}
}

// routeView is a route as GET /admin/routes shows it.
type routeView struct {
	Path      string   `json:"path"`
	Methods   []string `json:"methods"`
	Service   string   `json:"service"`
	Auth      string   `json:"auth"`
	Roles     []string `json:"roles,omitempty"`
	Stream    bool     `json:"stream,omitempty"`
	RateLimit string   `json:"ratelimit"`
}

type liveView struct {
	Version   int         `json:"version"`
	LoadedAt  time.Time   `json:"loaded_at"`
	Source    string      `json:"source"`
	RateStore string      `json:"ratelimit_store"`
	Routes    []routeView `json:"routes"`
}

func (l *live) view() liveView {
	v := liveView{Version: l.version, LoadedAt: l.loadedAt, Source: l.source, RateStore: l.cfg.RateLimit.Store, Routes: []routeView{}}
	for _, rt := range l.cfg.Routes {
		v.Routes = append(v.Routes, routeView{Path: rt.Path, Methods: rt.Methods, Service: rt.Service, Auth: rt.Auth,
			Roles: rt.Roles, Stream: rt.Stream, RateLimit: strings.TrimSpace(rt.RateLimit.String())})
	}
	return v
}

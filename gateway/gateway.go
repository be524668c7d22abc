// Package gateway is mercato's API gateway: the one entry point for clients.
// It routes REST requests to services found through discovery, verifies
// access tokens at the edge and passes the caller's identity on, bounds
// request bodies, and answers every error as RFC 9457 problem+json.
package gateway

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/redis/go-redis/v9"

	"github.com/mercato-shop/mercato/gateway/h1"
	"github.com/mercato-shop/mercato/platform/discovery"
	"github.com/mercato-shop/mercato/platform/resilience"
	"github.com/mercato-shop/mercato/platform/telemetry"
	"github.com/mercato-shop/mercato/platform/web"
)

// Gateway is the routing handler.
type Gateway struct {
	mux    *http.ServeMux
	auth   *authenticator
	max    int64
	logger *slog.Logger
	self   map[string]http.Handler
	limits *limiter
	obs    *observer
	// transport reaches upstreams; buffers copy their answers.
	transport http.RoundTripper
	buffers   *h1.Buffers
	cache     *responseCache
	// closeStore releases the rate limit store's connections.
	closeStore func() error
}

// New builds the gateway for cfg. transport reaches upstreams (it resolves
// service names, see discovery.Transport); keyfunc finds token keys.
//
// Routes to the service Self are answered by self, keyed by route path (the
// gateway's own admin views); one without a handler there answers 404.
func New(cfg Config, transport http.RoundTripper, keyfunc jwt.Keyfunc, logger *slog.Logger, self ...map[string]http.Handler) *Gateway {
	g := &Gateway{
		mux:    http.NewServeMux(),
		auth:   newAuthenticator(cfg.JWT, keyfunc),
		max:    cfg.MaxBodyBytes,
		logger: logger,
		self:   map[string]http.Handler{},
		obs:    newObserver(logger),
		cache:  newResponseCache(cfg.CacheMaxBytes, time.Now),

		transport: transport,
		buffers:   &h1.Buffers{},
	}
	for _, m := range self {
		maps.Copy(g.self, m)
	}
	g.limits = &limiter{logger: logger, store: newMemoryStore(time.Now)}
	g.closeStore = func() error { return nil }
	if cfg.RateLimit.Store == StoreRedis {
		// ParseConfig checked the URL; a Config built otherwise may not be.
		if opts, err := redis.ParseURL(cfg.RateLimit.RedisURL); err != nil {
			logger.Error("rate limits kept in memory: the Redis URL is invalid", "err", err)
		} else {
			// A limit is not worth waiting for: a slow or absent store fails
			// fast, and the request passes (see limiter.allow).
			opts.MaxRetries, opts.DialerRetries = -1, 1
			opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = storeTimeout, storeTimeout, storeTimeout
			client := redis.NewClient(opts)
			g.limits.store, g.closeStore = newRedisStore(client, "mercato:gateway:"), client.Close
		}
	}
	byPath := map[string][]Route{}
	var paths []string
	for _, r := range cfg.Routes {
		if _, ok := byPath[r.Path]; !ok {
			paths = append(paths, r.Path)
		}
		byPath[r.Path] = append(byPath[r.Path], r)
	}
	for _, p := range paths {
		g.mux.Handle(p, g.routeHandler(byPath[p]))
	}
	g.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		web.Error(w, r, http.StatusNotFound, "no route for "+r.URL.Path)
	})
	return g
}

// Close releases what the gateway holds open: the rate limit store's
// connections.
func (g *Gateway) Close() error { return g.closeStore() }

// ServeHTTP implements http.Handler.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Identity headers are the gateway's to set; a client's copies never pass.
	r.Header.Del(web.SubjectHeader)
	r.Header.Del(web.RolesHeader)
	g.obs.serve(w, r, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if problem := pathProblem(r.URL); problem != "" {
			web.Error(w, r, http.StatusBadRequest, problem)
			return
		}
		g.mux.ServeHTTP(w, r)
	}))
}

// proxy is the reverse proxy of one route: the route is known to its
// hooks without a lookup per request.
func (g *Gateway) proxy(route Route) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite:      func(pr *httputil.ProxyRequest) { g.rewrite(pr, route) },
		Transport:    g.transport,
		ErrorHandler: g.upstreamError,
		ModifyResponse: func(resp *http.Response) error {
			// The gateway already echoes the id; the upstream's copy would repeat it.
			resp.Header.Del(telemetry.CorrelationHeader)
			g.obs.upstreamAnswered(resp, route.Service)
			if route.Rewrite != nil {
				route.Rewrite.ResponseHeaders.apply(resp.Header)
			}
			if len(route.Fields) > 0 {
				return filterFields(resp, route.Fields)
			}
			return nil
		},
		// No periodic flush: ReverseProxy flushes each write of a
		// text/event-stream answer or one of unknown length as it comes, and
		// a flush per write elsewhere costs a write syscall per response.
		FlushInterval: 0,
		BufferPool:    g.buffers,
	}
}

func (g *Gateway) routeHandler(routes []Route) http.Handler {
	var allow []string
	proxies := make([]*httputil.ReverseProxy, len(routes))
	for i, r := range routes {
		allow = append(allow, r.Methods...)
		if r.Service != Self {
			proxies[i] = g.proxy(r)
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := slices.IndexFunc(routes, func(rt Route) bool { return slices.Contains(rt.Methods, r.Method) })
		if i < 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			web.Error(w, r, http.StatusMethodNotAllowed, r.Method+" is not allowed on "+r.URL.Path)
			return
		}
		route := routes[i]
		if x := exchangeOf(r.Context()); x != nil {
			x.route = route.name
		}
		if r.ContentLength > g.max {
			web.Error(w, r, http.StatusRequestEntityTooLarge, "the body is larger than the gateway accepts")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, g.max)
		if route.Auth == AuthJWT {
			caller, err := g.auth.verify(r)
			if err != nil {
				// Refused callers are limited too, by address: each bad token
				// costs a signature check.
				if !g.limits.allow(w, r, route, clientKey(r)) {
					return
				}
				w.Header().Set("WWW-Authenticate", `Bearer realm="mercato"`)
				web.Error(w, r, http.StatusUnauthorized, err.Error())
				return
			}
			if len(route.Roles) > 0 && !slices.ContainsFunc(route.Roles, caller.HasRole) {
				web.Error(w, r, http.StatusForbidden, "this needs the role "+strings.Join(route.Roles, " or "))
				return
			}
			r.Header.Set(web.SubjectHeader, caller.Subject)
			r.Header.Set(web.RolesHeader, strings.Join(caller.Roles, ","))
		}
		// Signed-in callers are limited by who they are, others by address.
		key := clientKey(r)
		if s := r.Header.Get(web.SubjectHeader); s != "" {
			key = "sub:" + s
		}
		if !g.limits.allow(w, r, route, key) {
			return
		}
		if route.Service == Self {
			h, ok := g.self[route.Path]
			if !ok {
				web.Error(w, r, http.StatusNotFound, "no route for "+r.URL.Path)
				return
			}
			h.ServeHTTP(w, r)
			return
		}
		if r.ContentLength < 0 && !readBody(w, r) {
			return
		}
		if route.Stream {
			// The request has been read; the connection now only carries
			// the response, for as long as the upstream streams it.
			if err := http.NewResponseController(w).SetReadDeadline(time.Time{}); err != nil {
				g.logger.DebugContext(r.Context(), "lift read deadline", "path", r.URL.Path, "err", err)
			}
		}
		if route.Timeout > 0 || route.Split != nil {
			ctx := r.Context()
			if route.Timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, route.Timeout)
				defer cancel()
			}
			if route.Split != nil {
				v := route.Split.pick(r)
				ctx = discovery.WithVersion(ctx, v)
				if x := exchangeOf(ctx); x != nil {
					x.version = v
				}
			}
			r = r.WithContext(ctx)
		}
		if route.Cache.TTL > 0 {
			g.cache.serve(w, r, route.name, route.Cache, proxies[i])
			return
		}
		proxies[i].ServeHTTP(w, r)
	})
}

func (g *Gateway) rewrite(pr *httputil.ProxyRequest, route Route) {
	pr.SetURL(&url.URL{Scheme: "http", Host: route.Service})
	pr.SetXForwarded()
	pr.Out.Header.Set(telemetry.CorrelationHeader, telemetry.CorrelationID(pr.In.Context()))
	// Rewrite drops hop-by-hop headers and the identity headers it did not set
	// survive from In, so copy ours explicitly.
	for _, h := range []string{web.SubjectHeader, web.RolesHeader} {
		if v := pr.In.Header.Get(h); v != "" {
			pr.Out.Header.Set(h, v)
		}
	}
	if rw := route.Rewrite; rw != nil {
		if rw.Path != "" {
			pr.Out.URL.Path, pr.Out.URL.RawPath = rw.path(pr.In)
		}
		rw.RequestHeaders.apply(pr.Out.Header)
	}
}

func (g *Gateway) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		web.Error(w, r, http.StatusRequestEntityTooLarge, "the body is larger than the gateway accepts")
	case errors.Is(err, discovery.ErrNoInstance):
		web.Error(w, r, http.StatusServiceUnavailable, "the service is not available; try again shortly")
	case errors.Is(err, resilience.ErrOpen):
		web.Error(w, r, http.StatusServiceUnavailable, "the service keeps failing; calls to it are held back for a while")
	case errors.Is(err, resilience.ErrFull):
		web.Error(w, r, http.StatusServiceUnavailable, "the service has too many calls in flight; try again shortly")
	case errors.Is(err, context.DeadlineExceeded):
		web.Error(w, r, http.StatusGatewayTimeout, "the service did not answer in time")
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads the answer.
		w.WriteHeader(499)
	default:
		g.logger.WarnContext(r.Context(), "upstream failed", "path", r.URL.Path, "err", err)
		web.Error(w, r, http.StatusBadGateway, "the service failed to answer")
	}
}

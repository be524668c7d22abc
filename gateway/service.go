package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"

	"github.com/mercato-shop/mercato/gateway/h1"
	"github.com/mercato-shop/mercato/platform/discovery"
	"github.com/mercato-shop/mercato/platform/node"
	"github.com/mercato-shop/mercato/platform/runtime"
	"github.com/mercato-shop/mercato/platform/telemetry"
	"github.com/mercato-shop/mercato/platform/web"
)

// Name is the gateway's name in discovery.
const Name = "gateway"

// ServiceConfig configures a gateway instance.
type ServiceConfig struct {
	BusURL string
	Listen string // the public address, such as :8080
	Routes Config
	// RoutesFile, when set, is the file Routes came from: a change to it is
	// put in force without a restart (checked every second).
	RoutesFile string
	// NoRateLimits turns off the rate limits of every route file put in
	// force, for load generators.
	NoRateLimits bool
	// Resilience guards the gateway's calls to the services: see
	// node.Config.Resilience.
	Resilience []byte
}

// Service is a running gateway instance.
type Service struct {
	cfg  ServiceConfig
	node *node.Node
	stop context.CancelFunc
}

// NewService returns the gateway, not started.
func NewService(cfg ServiceConfig, logger *slog.Logger, tp trace.TracerProvider) *Service {
	return &Service{cfg: cfg, node: node.New(node.Config{
		Service:    Name,
		BusURL:     cfg.BusURL,
		Listen:     cfg.Listen,
		Resilience: cfg.Resilience,
		Edge:       true, // its admin views go through its routes and their auth
		Server:     func(h http.Handler) runtime.Server { return NewServer(h, logger) },
		Logger:     logger,
		Tracer:     tp,
	})}
}

// Start connects to discovery, loads the token keys and starts serving.
func (s *Service) Start(ctx context.Context) error {
	return s.node.Start(ctx, s.setup)
}

func (s *Service) setup(ctx context.Context) error {
	n := s.node
	upstream := h1.New(n.Transport())
	n.Append(runtime.Hook{Name: "upstream connections", Stop: func(context.Context) error { upstream.CloseIdleConnections(); return nil }})
	var transport http.RoundTripper = discovery.Transport(n.Balancer, otelhttp.NewTransport(upstream,
		otelhttp.WithTracerProvider(n.Tracer()), otelhttp.WithPropagators(telemetry.Propagator())))
	if n.Policies != nil {
		transport = n.Policies.ServiceTransport(transport)
	}

	// The key set refreshes in the background for as long as the gateway runs.
	keysCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.stop = cancel
	keys, err := keyfunc.NewDefaultOverrideCtx(keysCtx, []string{s.cfg.Routes.JWT.JWKS}, keyfunc.Override{
		Client:          &http.Client{Transport: transport, Timeout: 5 * time.Second},
		RefreshInterval: 10 * time.Minute,
		// A token with an unknown kid waits at most this long for a refresh,
		// so a flood of made-up kids cannot hold requests for a minute.
		RateLimitWaitMax: time.Second,
		// A token signed by a key not seen yet triggers a refresh, at most once a second.
		RefreshUnknownKID: rate.NewLimiter(rate.Every(time.Second), 1),
		RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
			return func(ctx context.Context, err error) {
				n.Logger().WarnContext(ctx, "refresh token keys", "url", u, "err", err)
			}
		},
	})
	if err != nil {
		cancel()
		return fmt.Errorf("token keys: %w", err)
	}
	n.Append(runtime.Hook{Name: "token keys", Stop: func(context.Context) error { cancel(); return nil }})
	direct := &http.Client{Transport: n.Transport(), Timeout: 10 * time.Second}
	chaos := instanceHandler(n.Registry, direct, chaosPath)
	self := map[string]http.Handler{
		"/admin/services":                        servicesHandler(n.Registry, n.Balancer, direct),
		"/admin/breakers":                        breakers(n),
		"/admin/breakers/{service}/{instance}":   instanceHandler(n.Registry, direct, breakersPath),
		"/admin/metrics":                         n.MetricsHandler(),
		"/admin/metrics/{service}/{instance}":    instanceHandler(n.Registry, direct, metricsPath),
		"/admin/chaos/{service}/{instance}":      chaos,
		"/admin/chaos/{service}/{instance}/kill": chaos,
	}
	bff := bffHandlers(&http.Client{Transport: transport}, s.cfg.Routes.BFF, n.Logger())
	self[bffWebOrderPath] = bff[bffWebOrderPath]
	self[bffMobileOrderPath] = bff[bffMobileOrderPath]
	var rl *Reloader
	self["/admin/routes"] = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { rl.Handler().ServeHTTP(w, r) })
	var prepare func(Config) Config
	if s.cfg.NoRateLimits {
		prepare = Config.WithoutRateLimits
	}
	rl = NewReloader(s.cfg.Routes, func(cfg Config) *Gateway { return New(cfg, transport, keys.Keyfunc, n.Logger(), self) }, prepare)
	for _, c := range append(rl.Gateway().cache.collectors(), rl.Gateway().Collector()) {
		if err := n.Metrics.Register(c); err != nil {
			return fmt.Errorf("gateway metrics: %w", err)
		}
	}
	n.Append(runtime.Hook{Name: "rate limit store", Stop: func(context.Context) error { return rl.Close() }})
	if s.cfg.RoutesFile != "" {
		watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		go func() {
			defer close(done)
			rl.Watch(watchCtx, s.cfg.RoutesFile, time.Second, func(err error) {
				if err != nil {
					n.Logger().Warn("route file not reloaded; the routes in force stay", "err", err)
					return
				}
				n.Logger().Info("routes reloaded", "file", s.cfg.RoutesFile)
			})
		}()
		n.Append(runtime.Hook{Name: "route file watch", Stop: func(context.Context) error { stopWatch(); <-done; return nil }})
	}
	n.Mux.Handle("/", rl)
	return nil
}

// Stop drains and closes the gateway.
func (s *Service) Stop(ctx context.Context) error { return s.node.Stop(ctx) }

// Hook returns the gateway as a lifecycle hook.
func (s *Service) Hook() runtime.Hook {
	return runtime.Hook{Name: Name, Start: s.Start, Stop: s.Stop}
}

// Addr is the gateway's listener address once started.
func (s *Service) Addr() string { return s.node.Addr() }

// breakers answers GET /admin/breakers with the gateway's own breakers, one
// per service it calls (each instance of a service keeps its own, for its
// own calls).
func breakers(n *node.Node) http.Handler {
	if n.Policies == nil {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			web.Error(w, r, http.StatusNotFound, "the gateway runs without resilience policies")
		})
	}
	return n.Policies.Handler()
}

// NewServer is the gateway's listener: the same bounds as every mercato
// listener, on a server that spends less per request than net/http's
// (gateway/h1); the edge carries every client's request.
func NewServer(h http.Handler, logger *slog.Logger) *h1.Server {
	return &h1.Server{
		Handler:           h,
		ReadHeaderTimeout: runtime.ReadHeaderTimeout,
		ReadTimeout:       runtime.ReadTimeout,
		IdleTimeout:       runtime.IdleTimeout,
		Logger:            logger,
	}
}

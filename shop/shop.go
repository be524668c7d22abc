// Package shop assembles mercato's services into one process, as `mercato
// up` runs them: an embedded NATS server with JetStream, and every service
// with its own SQLite database under the data directory, its own listener on
// a kernel-chosen loopback port and its own broker connection. Services
// still reach each other only over the network, through discovery.
package shop

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	neturl "net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/mercato-shop/mercato/deploy"
	"github.com/mercato-shop/mercato/external/paysim"
	"github.com/mercato-shop/mercato/gateway"
	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/discovery"
	"github.com/mercato-shop/mercato/platform/runtime"
	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/platform/telemetry"
	"github.com/mercato-shop/mercato/services/customer"
	"github.com/mercato-shop/mercato/services/inventory"
	"github.com/mercato-shop/mercato/services/order"
	"github.com/mercato-shop/mercato/services/orderview"
	"github.com/mercato-shop/mercato/services/payment"
)

// Config configures a shop.
type Config struct {
	Addr          string // the gateway's address, such as :8080
	DataDir       string // all state: broker store and one database per service
	AdminPassword string // see customer.Config.AdminPassword
	Routes        []byte // gateway route file; nil for the built-in one
	// RoutesFile is read when Routes is nil, and watched: the gateway puts
	// a change to it in force without a restart.
	RoutesFile string
	// Clients are the machine clients of the token endpoint (OAuth 2.0
	// client credentials): see customer.Config.Clients.
	Clients []customer.Client
	// Canary names services whose last replica announces the version
	// "canary" in discovery; every other instance announces "stable". A
	// route's split then sends a share of its calls to it. Each needs at
	// least 2 replicas.
	Canary []string
	// NoRateLimits turns the gateway's rate limits off, for load
	// generators: hammering is what the limits stop.
	NoRateLimits bool
	// Resilience is the policy file of synchronous calls; nil for the
	// built-in deploy/resilience.yaml.
	Resilience []byte
	// SagaRetry, StepTimeout and DefaultSaga: see order.Config; zero values
	// for the defaults.
	SagaRetry, StepTimeout time.Duration
	DefaultSaga            string
	// ShipAfter and SnapshotEvery: see order.Config.
	ShipAfter     time.Duration
	SnapshotEvery int64
	// Replicas is how many instances of a service run (default 1 each):
	// customer, inventory, order and payment may run several, each with
	// its own listener, broker connection and consumers, on the service's
	// one database. Work queues spread across them; clients balance calls.
	Replicas map[string]int
	// PaymentAttempts and PaymentBackoff: see payment.Config.
	PaymentAttempts int
	PaymentBackoff  []time.Duration
	// Spans, when set, receives every span every service ends.
	Spans     sdktrace.SpanProcessor
	LogOutput io.Writer
	LogLevel  slog.Level
}

// Shop is a running shop.
type Shop struct {
	lc        runtime.Lifecycle
	mu        sync.Mutex
	broker    *bus.Server
	brokerCfg bus.ServerConfig // to restart it on the same port and store
	brokerURL string
	provider  *paysim.Simulator
	gateway   *gateway.Service
	customer  *customer.Service // the first instance: it knows the admin password it generated
}

// maxReplicas bounds Config.Replicas: they share one process and its cores.
const maxReplicas = 8

// replicas returns how many instances of each service cfg asks for.
func replicas(cfg Config) (func(service string) int, error) {
	for name, n := range cfg.Replicas {
		switch name {
		case customer.Name, inventory.Name, order.Name, payment.Name:
		default:
			return nil, fmt.Errorf("replicas: %q cannot run replicated (customer, inventory, order and payment can)", name)
		}
		if n < 1 || n > maxReplicas {
			return nil, fmt.Errorf("replicas: %s=%d, want 1 to %d", name, n, maxReplicas)
		}
	}
	for _, name := range cfg.Canary {
		if cfg.Replicas[name] < 2 {
			return nil, fmt.Errorf("canary: %s needs at least 2 replicas, one of them the canary", name)
		}
	}
	return func(service string) int { return max(cfg.Replicas[service], 1) }, nil
}

// Versions announced in discovery by the instances of `mercato up`.
const (
	VersionStable = "stable"
	VersionCanary = "canary"
)

// version is what replica i (from 0) of service announces.
func version(cfg Config, service string, i, n int) string {
	if i == n-1 && slices.Contains(cfg.Canary, service) {
		return VersionCanary
	}
	return VersionStable
}

// Start starts the broker and the services, in dependency order. On failure,
// whatever started is stopped again.
func Start(ctx context.Context, cfg Config) (*Shop, error) {
	if cfg.Addr == "" {
		cfg.Addr = ":8080"
	}
	if cfg.LogOutput == nil {
		cfg.LogOutput = os.Stderr
	}
	if cfg.Routes == nil && cfg.RoutesFile != "" {
		b, err := os.ReadFile(cfg.RoutesFile)
		if err != nil {
			return nil, fmt.Errorf("read routes: %w", err)
		}
		cfg.Routes = b
	}
	if cfg.Routes == nil {
		cfg.Routes = deploy.GatewayRoutes()
	}
	if cfg.Resilience == nil {
		cfg.Resilience = deploy.Resilience()
	}
	routes, err := gateway.ParseConfig(cfg.Routes)
	if err != nil {
		return nil, err
	}
	count, err := replicas(cfg)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	logger := func(service string) *slog.Logger { return telemetry.NewLogger(cfg.LogOutput, service, cfg.LogLevel) }
	tracer := func(service string) trace.TracerProvider {
		if cfg.Spans == nil {
			return telemetry.NewTracerProvider(service)
		}
		return telemetry.NewTracerProvider(service, sdktrace.WithSpanProcessor(cfg.Spans))
	}

	broker, err := bus.StartServer(ctx, bus.ServerConfig{StoreDir: filepath.Join(cfg.DataDir, "nats"), Logger: logger("nats")})
	if err != nil {
		return nil, err
	}
	url := broker.ClientURL()
	s := &Shop{broker: broker, brokerURL: url, brokerCfg: bus.ServerConfig{
		StoreDir: filepath.Join(cfg.DataDir, "nats"), Logger: logger("nats"), Port: portOf(url),
	}}
	s.lc.Append(runtime.Hook{Name: "broker", Stop: func(context.Context) error { s.StopBroker(); return nil }})

	// Every instance registered in the broker's store is from an earlier,
	// dead run of this process: forget them, or the gateway would send
	// requests to them until their registrations expire.
	if err := forgetInstances(ctx, url); err != nil {
		broker.Shutdown()
		return nil, err
	}

	// The payment provider is the outside world: a simulator with a
	// listener of its own, reached over HTTP through payment's
	// anti-corruption layer.
	s.provider = paysim.New(paysim.Config{Logger: logger("paysim")})
	if err := s.provider.Start(ctx); err != nil {
		broker.Shutdown()
		return nil, err
	}
	s.lc.Append(runtime.Hook{Name: "paysim", Stop: s.provider.Stop}, announceProvider(url, s.provider.Addr(), logger("paysim")))

	// Replicas start one after the other: the first migrates and seeds,
	// the others find it done.
	var hooks []runtime.Hook
	for i := range count(customer.Name) {
		c := customer.New(customer.Config{
			DSN:           storage.SQLiteDSN(cfg.DataDir, customer.Name),
			BusURL:        url,
			Resilience:    cfg.Resilience,
			Version:       version(cfg, customer.Name, i, count(customer.Name)),
			Issuer:        "mercato",
			Audience:      "mercato",
			AdminPassword: cfg.AdminPassword,
			Clients:       cfg.Clients,
		}, logger(customer.Name), tracer(customer.Name))
		if s.customer == nil {
			s.customer = c
		}
		hooks = append(hooks, c.Hook())
	}
	for i := range count(inventory.Name) {
		hooks = append(hooks, inventory.New(inventory.Config{
			DSN:        storage.SQLiteDSN(cfg.DataDir, inventory.Name),
			BusURL:     url,
			Resilience: cfg.Resilience,
			Version:    version(cfg, inventory.Name, i, count(inventory.Name)),
			Seed:       true,
		}, logger(inventory.Name), tracer(inventory.Name)).Hook())
	}
	for i := range count(payment.Name) {
		hooks = append(hooks, payment.New(payment.Config{
			DSN:         storage.SQLiteDSN(cfg.DataDir, payment.Name),
			BusURL:      url,
			Resilience:  cfg.Resilience,
			Version:     version(cfg, payment.Name, i, count(payment.Name)),
			ProviderURL: s.provider.URL(),
			Attempts:    cfg.PaymentAttempts,
			Backoff:     cfg.PaymentBackoff,
		}, logger(payment.Name), tracer(payment.Name)).Hook())
	}
	for i := range count(order.Name) {
		hooks = append(hooks, order.New(order.Config{
			DSN:           storage.SQLiteDSN(cfg.DataDir, order.Name),
			BusURL:        url,
			Resilience:    cfg.Resilience,
			Version:       version(cfg, order.Name, i, count(order.Name)),
			SagaRetry:     cfg.SagaRetry,
			StepTimeout:   cfg.StepTimeout,
			DefaultSaga:   cfg.DefaultSaga,
			ShipAfter:     cfg.ShipAfter,
			SnapshotEvery: cfg.SnapshotEvery,
		}, logger(order.Name), tracer(order.Name)).Hook())
	}
	view := orderview.New(orderview.Config{
		DSN:        storage.SQLiteDSN(cfg.DataDir, orderview.Name),
		BusURL:     url,
		Resilience: cfg.Resilience,
	}, logger(orderview.Name), tracer(orderview.Name))
	hooks = append(hooks, view.Hook())
	s.gateway = gateway.NewService(gateway.ServiceConfig{
		BusURL:       url,
		Resilience:   cfg.Resilience,
		Listen:       cfg.Addr,
		Routes:       routes,
		RoutesFile:   cfg.RoutesFile,
		NoRateLimits: cfg.NoRateLimits,
	}, logger(gateway.Name), tracer(gateway.Name))

	// The gateway starts last so that its first requests find the others.
	s.lc.Append(append(hooks, s.gateway.Hook())...)
	if err := s.lc.Start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Stop stops the services in reverse order, then the broker.
func (s *Shop) Stop(ctx context.Context) error {
	return s.lc.Stop(ctx)
}

// GatewayAddr is the address the gateway listens on.
func (s *Shop) GatewayAddr() string { return s.gateway.Addr() }

// BrokerURL is the embedded NATS server's client URL.
func (s *Shop) BrokerURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.brokerURL
}

// StopBroker shuts the embedded broker down, as a crash of the broker would
// look to the services: they keep running and reconnecting.
func (s *Shop) StopBroker() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broker != nil {
		s.broker.Shutdown()
		s.broker = nil
	}
}

// StartBroker starts the embedded broker again on its port and store; the
// services' connections find it again.
func (s *Shop) StartBroker(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broker != nil {
		return nil
	}
	b, err := bus.StartServer(ctx, s.brokerCfg)
	if err != nil {
		return err
	}
	s.broker = b
	return nil
}

// Provider is the simulated payment provider, for fault switches.
func (s *Shop) Provider() *paysim.Simulator { return s.provider }

// AdminPassword is the admin password generated on this start, or "".
func (s *Shop) AdminPassword() string { return s.customer.AdminPassword() }

// Run starts the shop, calls ready, and stops it when ctx ends.
func Run(ctx context.Context, cfg Config, ready func(*Shop)) error {
	s, err := Start(ctx, cfg)
	if err != nil {
		return err
	}
	ready(s)
	<-ctx.Done()
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
	defer cancel()
	if err := s.Stop(stopCtx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// stopTimeout bounds a graceful stop: requests in flight drain within it.
const stopTimeout = 15 * time.Second

func portOf(url string) int {
	u, err := neturl.Parse(url)
	if err != nil {
		return 0
	}
	p, _ := strconv.Atoi(u.Port())
	return p
}

// ProviderService is the name the simulated payment provider has in
// discovery.
const ProviderService = "paysim"

// announceProvider registers the simulated provider in discovery, so that
// the gateway and `mercato chaos` reach its fault switches as they reach
// any instance's. It is the demo's stand-in for the outside world: payment
// still calls it by URL, as it would a real provider, which no registry of
// the shop would list.
func announceProvider(url, addr string, logger *slog.Logger) runtime.Hook {
	var stop func(context.Context) error
	return runtime.Hook{
		Name: "paysim registration",
		Start: func(ctx context.Context) error {
			b, err := bus.Connect(ctx, bus.Config{URL: url, Source: ProviderService, Logger: logger})
			if err != nil {
				return err
			}
			reg, err := discovery.NewRegistry(ctx, b.JetStream(), discovery.Config{Logger: logger})
			if err != nil {
				b.Close()
				return err
			}
			deregister, err := reg.Register(context.WithoutCancel(ctx), discovery.Instance{Service: ProviderService, Addr: addr})
			if err != nil {
				reg.Close()
				b.Close()
				return err
			}
			stop = func(ctx context.Context) error {
				defer b.Close()
				defer reg.Close()
				return deregister(ctx)
			}
			return nil
		},
		Stop: func(ctx context.Context) error { return stop(ctx) },
	}
}

func forgetInstances(ctx context.Context, url string) error {
	nc, err := nats.Connect(url)
	if err != nil {
		return fmt.Errorf("forget instances: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("forget instances: %w", err)
	}
	return discovery.Forget(ctx, js, discovery.DefaultBucket)
}

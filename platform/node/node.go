// Package node runs one instance of a service the way every mercato service
// runs: its own database (migrated on start), its own broker connection, one
// HTTP listener for REST, RPC, health and metrics, and a registration in
// discovery so that others can find it. A service adds its adapters in a
// setup step; node owns the order of start and stop.
package node

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/chaos"
	"github.com/mercato-shop/mercato/platform/discovery"
	"github.com/mercato-shop/mercato/platform/inbox"
	"github.com/mercato-shop/mercato/platform/outbox"
	"github.com/mercato-shop/mercato/platform/resilience"
	"github.com/mercato-shop/mercato/platform/runtime"
	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/platform/web"
)

// Config describes one service instance.
type Config struct {
	Service    string // service name, used in discovery, logs and events
	Version    string
	DSN        string // its own database (see storage.Open); empty for none
	Migrations fs.FS  // its own schema
	BusURL     string // NATS server
	Listen     string // HTTP listen address; default 127.0.0.1:0 (a free port)
	// DeadLetters is the stream where consumers put the messages they give
	// up on; default DEADLETTER, shared by every service.
	DeadLetters string
	// Resilience is a policy file (platform/resilience, deploy/resilience.yaml)
	// guarding every call the node's clients make to other services; nil
	// leaves calls unguarded.
	Resilience []byte
	// Edge marks the node whose listener faces clients (the gateway). It
	// serves none of the internal admin routes (/admin/chaos,
	// /admin/breakers): they trust identity headers, which on the edge
	// anyone could send.
	Edge bool
	// Server builds the server of the node's listener around its handler;
	// nil is net/http's (runtime.NewHTTPServer).
	Server func(http.Handler) runtime.Server
	Logger *slog.Logger
	Tracer trace.TracerProvider
}

// Node is a running service instance. DB, Bus, Mux and Health are ready for
// use inside the setup function passed to Start.
type Node struct {
	cfg Config
	id  string
	lc  runtime.Lifecycle
	DB  *storage.DB
	Bus *bus.Bus
	// Outbox and Inbox live in the service's database (nil without one):
	// every event the service publishes goes through Outbox, in the
	// transaction of the change it announces.
	Outbox   *outbox.Outbox
	Inbox    *inbox.Inbox
	Registry *discovery.Registry
	// Balancer picks an instance per call among Registry's live ones (power
	// of two choices on outstanding calls, failing instances ejected); every
	// client the node hands out goes through it.
	Balancer *discovery.Balancer
	Mux      *http.ServeMux
	Health   *runtime.Health
	server   *runtime.HTTPServer
	// Faults are the instance's chaos switches (platform/chaos), off
	// until set through its admin API or directly.
	Faults *chaos.Faults
	// Policies guard the calls of HTTPClient (nil without Config.Resilience);
	// their breakers are this instance's own.
	Policies *resilience.Policies
	// Metrics is the instance's own Prometheus registry, served at
	// /metrics on its internal listener: Go runtime and process metrics,
	// and its Policies'. Services add theirs.
	Metrics *prometheus.Registry
	// transport pools connections for every client the node hands out.
	transport *http.Transport
	killed    atomic.Bool
}

// New returns a node that is not started yet.
func New(cfg Config) *Node {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.DeadLetters == "" {
		cfg.DeadLetters = "DEADLETTER"
	}
	if cfg.Tracer == nil {
		cfg.Tracer = noop.NewTracerProvider()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	metrics := prometheus.NewRegistry()
	metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &Node{
		cfg:       cfg,
		Metrics:   metrics,
		id:        uuid.Must(uuid.NewV7()).String(),
		Mux:       http.NewServeMux(),
		Health:    &runtime.Health{},
		transport: web.NewTransport(),
		Faults:    &chaos.Faults{},
	}
}

// Append adds hooks (consumers, timers) that start after the database and
// broker and before the listener, and stop in reverse.
func (n *Node) Append(hooks ...runtime.Hook) { n.lc.Append(hooks...) }

// Consume subscribes a durable consumer for the life of the node. It does
// not hold up the start: a stream whose owner has not started yet is waited
// for in the background, so services may start in any order, and /readyz
// says which consumers are still waiting. A message the handlers give up on
// goes to the dead letters, unless c names another dead-letter stream.
func (n *Node) Consume(c bus.Consumer, hs bus.Handlers) {
	if c.DeadLetter == "" {
		c.DeadLetter = n.cfg.DeadLetters
	}
	k := &consumer{node: n, cfg: c, handlers: hs}
	name := "consumer " + c.Stream + "/" + c.Durable
	n.Health.Check(name, k.ready)
	n.Append(runtime.Hook{Name: name, Start: k.start, Stop: k.stop})
}

// consumer is one durable consumer, subscribed for the life of its node.
type consumer struct {
	node     *Node
	cfg      bus.Consumer
	handlers bus.Handlers
	cancel   context.CancelFunc // ends a wait for the stream
	done     chan struct{}      // closed when the subscribing is over

	mu  sync.Mutex
	sub *bus.Subscription // nil until subscribed
}

func (k *consumer) start(ctx context.Context) error {
	k.done = make(chan struct{})
	// A stream that exists already (the service's own, or one declared by a
	// service started before) is subscribed now, so that the service is
	// consuming when Start returns.
	if _, err := k.node.Bus.JetStream().Stream(ctx, k.cfg.Stream); err == nil {
		defer close(k.done)
		k.cancel = func() {}
		return k.subscribe(ctx)
	}
	ctx, k.cancel = context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		defer close(k.done)
		if err := k.subscribe(ctx); err != nil && ctx.Err() == nil {
			k.node.cfg.Logger.ErrorContext(ctx, "subscribe", "stream", k.cfg.Stream, "consumer", k.cfg.Durable, "err", err)
		}
	}()
	return nil
}

func (k *consumer) subscribe(ctx context.Context) error {
	s, err := k.node.Bus.Subscribe(ctx, k.cfg, k.handlers)
	if err != nil {
		return err
	}
	k.mu.Lock()
	k.sub = s
	k.mu.Unlock()
	return nil
}

func (k *consumer) stop(context.Context) error {
	k.cancel()
	<-k.done
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.sub != nil {
		k.sub.Stop()
		k.sub = nil
	}
	return nil
}

func (k *consumer) ready(context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.sub == nil {
		return fmt.Errorf("waiting for stream %s", k.cfg.Stream)
	}
	return nil
}

// Logger is the service's logger.
func (n *Node) Logger() *slog.Logger { return n.cfg.Logger }

// Tracer is the service's tracer provider.
func (n *Node) Tracer() trace.TracerProvider { return n.cfg.Tracer }

// Start opens the database and the broker connection, runs setup, then
// listens and registers. When any step fails, what was started is stopped.
func (n *Node) Start(ctx context.Context, setup func(ctx context.Context) error) error {
	if n.cfg.Resilience != nil && n.Policies == nil {
		p, err := resilience.Load(n.cfg.Resilience, n.cfg.Logger)
		if err != nil {
			return fmt.Errorf("%s: resilience policies: %w", n.cfg.Service, err)
		}
		n.Policies = p
		if err := n.Metrics.Register(p.Collector()); err != nil {
			return fmt.Errorf("%s: resilience metrics: %w", n.cfg.Service, err)
		}
	}
	n.lc.Append(
		runtime.Hook{Name: "database", Start: n.openDB, Stop: n.closeDB},
		runtime.Hook{Name: "bus", Start: n.connectBus, Stop: func(context.Context) error { n.Bus.Close(); return nil }},
		runtime.Hook{Name: "discovery", Start: n.openRegistry, Stop: func(context.Context) error { n.Registry.Close(); return nil }},
		// Started before the service's consumers and stopped after them, so
		// what they commit is relayed.
		runtime.Hook{Name: "outbox", Start: n.openOutbox, Stop: n.closeOutbox},
	)
	if err := n.lc.Start(ctx); err != nil {
		return fmt.Errorf("%s: %w", n.cfg.Service, err)
	}
	if err := setup(ctx); err != nil {
		return errors.Join(fmt.Errorf("%s: setup: %w", n.cfg.Service, err), n.lc.Stop(ctx))
	}
	n.Health.Register(n.Mux)
	if !n.cfg.Edge {
		n.Faults.Routes(n.Mux, n.Kill)
		if n.Policies != nil {
			n.Mux.Handle("GET /admin/breakers", web.RequireRole("admin", n.Policies.Handler()))
		}
		// Unauthenticated, as scrapers expect, on the internal listener only.
		n.Mux.Handle("GET /metrics", n.MetricsHandler())
	}
	// Injected faults run inside the instrumentation, so traces and access
	// logs show them like real ones.
	h := web.Instrument(n.Faults.Middleware(n.Mux), n.cfg.Tracer, n.cfg.Logger)
	if n.cfg.Server != nil {
		n.server = runtime.NewServer(n.cfg.Listen, n.cfg.Server(h), n.cfg.Logger)
	} else {
		n.server = runtime.NewHTTPServer(n.cfg.Listen, h, n.cfg.Logger)
	}
	n.lc.Append(n.server.Hook("http"), runtime.Hook{Name: "registration", Start: n.register})
	if err := n.lc.Start(ctx); err != nil {
		return fmt.Errorf("%s: %w", n.cfg.Service, err)
	}
	n.cfg.Logger.InfoContext(ctx, "service started", "addr", n.server.Addr(), "instance", n.id)
	return nil
}

// Stop deregisters, drains the listener, stops the service's hooks, then
// closes the broker connection and the database.
func (n *Node) Stop(ctx context.Context) error {
	n.Health.Drain()
	err := n.lc.Stop(ctx)
	n.transport.CloseIdleConnections()
	n.cfg.Logger.InfoContext(ctx, "service stopped", "instance", n.id)
	return err
}

// HTTPClient returns a client for calls to other services by name,
// "http://inventory/...": discovery picks a live instance for each request,
// under the service's resilience policies when the node has them.
func (n *Node) HTTPClient() *http.Client {
	var t http.RoundTripper = discovery.Transport(n.Balancer, n.transport)
	if n.Policies != nil {
		// Above discovery, so that a retry is balanced again.
		t = n.Policies.ServiceTransport(t)
	}
	return &http.Client{Transport: t}
}

// Transport is the node's pooled transport, for clients of hosts outside
// discovery (a payment provider).
func (n *Node) Transport() *http.Transport { return n.transport }

// MetricsHandler serves Metrics in the Prometheus text format.
func (n *Node) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(n.Metrics, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(n.cfg.Logger.Handler(), slog.LevelWarn)})
}

// Addr is the listener's address once started.
func (n *Node) Addr() string {
	if n.server == nil {
		return ""
	}
	return n.server.Addr()
}

func (n *Node) openDB(ctx context.Context) error {
	if n.cfg.DSN == "" {
		return nil // a stateless service, such as the gateway
	}
	db, err := storage.Open(ctx, n.cfg.DSN)
	if err != nil {
		return err
	}
	if n.cfg.Migrations != nil {
		if err := db.Migrate(ctx, n.cfg.Migrations); err != nil {
			_ = db.Close()
			return err
		}
	}
	n.DB = db
	n.Health.Check("database", db.PingContext)
	return nil
}

func (n *Node) connectBus(ctx context.Context) error {
	b, err := bus.Connect(ctx, bus.Config{URL: n.cfg.BusURL, Source: n.cfg.Service, Logger: n.cfg.Logger, Tracer: n.cfg.Tracer})
	if err != nil {
		return err
	}
	n.Bus = b
	n.Health.Check("bus", b.Ready)
	if err := b.EnsureStream(ctx, bus.DeadLetterStream(n.cfg.DeadLetters)); err != nil {
		b.Close()
		return err
	}
	return nil
}

// DeadLetters gives access to the dead letters of every consumer.
func (n *Node) DeadLetters() *bus.DeadLetters { return n.Bus.DeadLetters(n.cfg.DeadLetters) }

func (n *Node) openOutbox(ctx context.Context) error {
	if n.DB == nil {
		return nil
	}
	o := outbox.New(n.DB, n.Bus, outbox.Config{Logger: n.cfg.Logger})
	if err := o.EnsureSchema(ctx); err != nil {
		return err
	}
	in := inbox.New(n.DB, "")
	if err := in.EnsureSchema(ctx); err != nil {
		return err
	}
	if err := o.Start(ctx); err != nil {
		return err
	}
	n.Outbox, n.Inbox = o, in
	return nil
}

func (n *Node) closeOutbox(ctx context.Context) error {
	if n.Outbox == nil {
		return nil
	}
	return n.Outbox.Stop(ctx)
}

func (n *Node) openRegistry(ctx context.Context) error {
	r, err := discovery.NewRegistry(ctx, n.Bus.JetStream(), discovery.Config{Logger: n.cfg.Logger})
	if err != nil {
		return err
	}
	b, err := discovery.NewBalancer(r, discovery.BalancerConfig{})
	if err != nil {
		r.Close()
		return err
	}
	n.Registry, n.Balancer = r, b
	return nil
}

// register announces the instance; the returned deregistration runs on stop
// through a hook of its own so that it happens before the listener drains.
func (n *Node) register(ctx context.Context) error {
	deregister, err := n.Registry.Register(context.WithoutCancel(ctx), discovery.Instance{
		Service: n.cfg.Service,
		ID:      n.id,
		Addr:    n.server.Addr(),
		Version: n.cfg.Version,
	})
	if err != nil {
		return err
	}
	n.lc.Append(runtime.Hook{Name: "deregistration", Stop: func(ctx context.Context) error {
		if n.killed.Load() {
			return nil // a crash says no goodbye: the registration expires
		}
		return deregister(ctx)
	}})
	return nil
}

// Kill stops the instance as a crash would look to the others: it stops
// heartbeating without deregistering (clients drop it after the registry's
// TTL), its listener closes and its consumers stop. The process goes on.
func (n *Node) Kill(ctx context.Context) {
	n.killed.Store(true)
	n.cfg.Logger.WarnContext(ctx, "instance killed by a chaos switch", "instance", n.id)
	if err := n.Stop(ctx); err != nil {
		n.cfg.Logger.WarnContext(ctx, "kill", "instance", n.id, "err", err)
	}
}

// ID is the instance's id in discovery.
func (n *Node) ID() string { return n.id }

func (n *Node) closeDB(context.Context) error {
	if n.DB == nil {
		return nil
	}
	return n.DB.Close()
}

// Package order is the order context: the order lifecycle (PENDING ->
// CONFIRMED -> SHIPPED, or CANCELLED with a reason), event-sourced, and the
// order saga of the playbook, which reserves stock, charges the payment, and
// compensates in reverse when a step fails.
//
// REST: POST /api/orders, GET /api/orders/{id}[?version=N],
// GET /api/orders/{id}/events, GET /api/orders/{id}/updates (server-sent
// events), POST /api/orders/{id}/cancel.
// RPC: order.v1.OrderService. Sends inventory.cmd.reserve,
// inventory.cmd.release, payment.cmd.charge, payment.cmd.refund; consumes
// inventory.reserved/failed/released, payment.completed/failed/refunded.
// Publishes order.created, order.confirmed, order.cancelled, order.shipped.
package order

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"

	"github.com/mercato-shop/mercato/api/gen/inventory/v1/inventoryv1connect"
	"github.com/mercato-shop/mercato/api/gen/order/v1/orderv1connect"
	"github.com/mercato-shop/mercato/platform/eventstore"
	"github.com/mercato-shop/mercato/platform/node"
	"github.com/mercato-shop/mercato/platform/rpc"
	"github.com/mercato-shop/mercato/platform/runtime"
	"github.com/mercato-shop/mercato/services/order/adapters"
	"github.com/mercato-shop/mercato/services/order/app"
	"github.com/mercato-shop/mercato/services/order/domain"
	"github.com/mercato-shop/mercato/services/order/migrations"
)

// Name is the service's name in discovery.
const Name = "order"

// Config configures the order service.
type Config struct {
	DSN    string
	BusURL string
	Listen string
	// SagaRetry is how long a saga step may wait for its reply before its
	// command is sent again (default 5s). Commands are idempotent, so a
	// repeat is safe; it makes up for a message lost on the way.
	SagaRetry time.Duration
	// StepTimeout is how long a forward saga step (reserve, charge) may go
	// unanswered before the saga compensates it and cancels the order with
	// reason timeout (default 30s).
	StepTimeout time.Duration
	// DefaultSaga is the saga mode of an order that names none:
	// orchestrated (the default) or choreographed.
	DefaultSaga string
	// ShipAfter is how long after its confirmation an order ships
	// (default 10s).
	ShipAfter time.Duration
	// SnapshotEvery: a snapshot of an order is stored each time its stream
	// crosses a multiple of this many events (default 3, so a shipped
	// order loads from one).
	SnapshotEvery int64
	// Heartbeat is how often an idle stream of order updates sends a
	// comment, so proxies keep it open (default 15s).
	Heartbeat time.Duration
	// Resilience guards the service's calls to others: see
	// node.Config.Resilience.
	Resilience []byte
	// Version is what the instance announces in discovery (canary,
	// blue-green splits pick instances by it); empty for none.
	Version string
}

// Service is a running order service.
type Service struct {
	cfg  Config
	node *node.Node
}

// New returns the service, not started.
func New(cfg Config, logger *slog.Logger, tp trace.TracerProvider) *Service {
	if cfg.SagaRetry <= 0 {
		cfg.SagaRetry = 5 * time.Second
	}
	if cfg.StepTimeout <= 0 {
		cfg.StepTimeout = 30 * time.Second
	}
	if cfg.ShipAfter <= 0 {
		cfg.ShipAfter = 10 * time.Second
	}
	if cfg.SnapshotEvery <= 0 {
		cfg.SnapshotEvery = 3
	}
	return &Service{cfg: cfg, node: node.New(node.Config{
		Service:    Name,
		DSN:        cfg.DSN,
		Migrations: migrations.FS,
		BusURL:     cfg.BusURL,
		Listen:     cfg.Listen,
		Logger:     logger,
		Resilience: cfg.Resilience,
		Version:    cfg.Version,
		Tracer:     tp,
	})}
}

// Start opens the database, consumes the saga's replies, resumes every saga
// in flight, and starts serving.
func (s *Service) Start(ctx context.Context) error {
	switch s.cfg.DefaultSaga {
	case "", domain.Orchestrated, domain.Choreographed:
	default:
		return fmt.Errorf("order: default saga %q must be orchestrated or choreographed", s.cfg.DefaultSaga)
	}
	return s.node.Start(ctx, s.setup)
}

func (s *Service) setup(ctx context.Context) error {
	n := s.node
	if err := n.Bus.EnsureStream(ctx, adapters.EventStream()); err != nil {
		return err
	}
	clientOpts, err := rpc.ClientOptions(n.Tracer(), 0)
	if err != nil {
		return err
	}
	inventory := inventoryv1connect.NewInventoryServiceClient(n.HTTPClient(), "http://inventory", clientOpts...)

	events, err := eventstore.New(n.DB, eventstore.Config{SnapshotEvery: s.cfg.SnapshotEvery, Upcasters: adapters.Upcasters()})
	if err != nil {
		return err
	}
	if err := events.EnsureSchema(ctx); err != nil {
		return err
	}
	store := adapters.NewStore(n.DB, events, n.Outbox, n.Inbox, s.cfg.ShipAfter)
	if imported, err := store.ImportLegacy(ctx); err != nil {
		return err
	} else if imported > 0 {
		n.Logger().InfoContext(ctx, "imported orders stored before event sourcing", "count", imported)
	}
	saga := app.NewSagaHandler(store, s.cfg.StepTimeout, n.Logger())
	replies := &adapters.Replies{Saga: saga}
	for _, c := range adapters.ReplyConsumers() {
		n.Consume(c, replies.Handlers())
	}
	n.Append(s.resumer(saga, store), s.shipper(saga, store))

	h := &adapters.HTTP{
		Place:  app.NewPlaceOrderHandler(&adapters.Catalog{Client: inventory}, store, s.cfg.DefaultSaga, s.cfg.StepTimeout, n.Logger()),
		Cancel: saga,
		Orders: store,
		Logger: n.Logger(),
	}
	h.Routes(n.Mux)
	changes := &adapters.Changes{}
	n.Append(listen(changes, n))
	n.Mux.Handle("GET /api/orders/{id}/updates", &adapters.Updates{Orders: store, Changes: changes, Heartbeat: s.cfg.Heartbeat, Logger: n.Logger()})
	opts, err := rpc.HandlerOptions(n.Tracer())
	if err != nil {
		return err
	}
	n.Mux.Handle(orderv1connect.NewOrderServiceHandler(&adapters.RPC{Orders: store}, opts...))
	return nil
}

// resumer sends again, on start, the pending commands of every saga in
// flight (a durable saga survives a restart), and later those of any saga
// whose step has waited longer than SagaRetry; it also compensates the
// steps that outlived StepTimeout.
func (s *Service) resumer(saga app.SagaHandler, store *adapters.Store) runtime.Hook {
	log := s.node.Logger()
	resume := func(ctx context.Context, before time.Time) {
		n, err := saga.Expire(ctx, store)
		if err != nil && ctx.Err() == nil {
			log.WarnContext(ctx, "expire saga steps", "err", err)
		}
		if n > 0 {
			log.InfoContext(ctx, "saga steps timed out", "count", n)
		}
		n, err = saga.Resume(ctx, store, before)
		if err != nil && ctx.Err() == nil {
			log.WarnContext(ctx, "resume sagas", "err", err)
		}
		if n > 0 {
			log.InfoContext(ctx, "resumed sagas", "count", n)
		}
	}
	tick := min(s.cfg.SagaRetry, s.cfg.StepTimeout) / 2
	return every("saga resumer", tick,
		func(ctx context.Context) { resume(ctx, time.Now()) },
		func(ctx context.Context) { resume(ctx, time.Now().Add(-s.cfg.SagaRetry)) })
}

// shipper ships each confirmed order once its shipment is due. The due
// times live in the database, so a restart loses no shipment.
func (s *Service) shipper(saga app.SagaHandler, store *adapters.Store) runtime.Hook {
	log := s.node.Logger()
	tick := min(max(s.cfg.ShipAfter/4, 50*time.Millisecond), time.Second)
	return every("shipper", tick, nil, func(ctx context.Context) {
		n, err := saga.ShipDue(ctx, store)
		if err != nil && ctx.Err() == nil {
			log.WarnContext(ctx, "ship orders", "err", err)
		}
		if n > 0 {
			log.DebugContext(ctx, "orders shipped", "count", n)
		}
	})
}

// every runs first (if any) as the hook starts, then fn every tick in a
// goroutine of its own until the hook stops.
func every(name string, tick time.Duration, first, fn func(ctx context.Context)) runtime.Hook {
	var (
		stop context.CancelFunc
		wg   sync.WaitGroup
	)
	return runtime.Hook{
		Name: name,
		Start: func(ctx context.Context) error {
			ctx, stop = context.WithCancel(context.WithoutCancel(ctx))
			if first != nil {
				first(ctx)
			}
			wg.Go(func() {
				t := time.NewTicker(tick)
				defer t.Stop()
				for {
					select {
					case <-ctx.Done():
						return
					case <-t.C:
						fn(ctx)
					}
				}
			})
			return nil
		},
		Stop: func(context.Context) error {
			stop()
			wg.Wait()
			return nil
		},
	}
}

// listen feeds changes from the order events on the broker for as long as
// the service runs.
func listen(changes *adapters.Changes, n *node.Node) runtime.Hook {
	var sub *nats.Subscription
	return runtime.Hook{
		Name: "order changes",
		Start: func(context.Context) error {
			var err error
			sub, err = changes.Listen(n.Bus.Conn())
			return err
		},
		Stop: func(context.Context) error { return sub.Unsubscribe() },
	}
}

// Stop drains and closes the service.
func (s *Service) Stop(ctx context.Context) error { return s.node.Stop(ctx) }

// Hook returns the service as a lifecycle hook.
func (s *Service) Hook() runtime.Hook {
	return runtime.Hook{Name: Name, Start: s.Start, Stop: s.Stop}
}

// Addr is the service's listener address once started.
func (s *Service) Addr() string { return s.node.Addr() }

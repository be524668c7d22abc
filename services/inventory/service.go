// Package inventory is the inventory context: the catalog (products with
// prices in minor units), stock, and reservations of stock per order.
//
// REST: GET /api/products, GET /api/products/{id}. RPC:
// inventory.v1.InventoryService (GetProduct, ListProducts). Commands on its
// queue: inventory.cmd.reserve, inventory.cmd.release. Publishes
// inventory.reserved, inventory.failed, inventory.released.
package inventory

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"

	"github.com/mercato-shop/mercato/api/gen/inventory/v1/inventoryv1connect"
	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/node"
	"github.com/mercato-shop/mercato/platform/rpc"
	"github.com/mercato-shop/mercato/platform/runtime"
	"github.com/mercato-shop/mercato/services/inventory/adapters"
	"github.com/mercato-shop/mercato/services/inventory/app"
	"github.com/mercato-shop/mercato/services/inventory/migrations"
)

// Name is the service's name in discovery.
const Name = "inventory"

// Config configures the inventory service.
type Config struct {
	DSN    string
	BusURL string
	Listen string
	// Seed fills an empty catalog with adapters.Catalog.
	Seed bool
	// Resilience guards the service's calls to others: see
	// node.Config.Resilience.
	Resilience []byte
	// Version is what the instance announces in discovery (canary,
	// blue-green splits pick instances by it); empty for none.
	Version string
}

// Service is a running inventory service.
type Service struct {
	cfg  Config
	node *node.Node
}

// New returns the service, not started.
func New(cfg Config, logger *slog.Logger, tp trace.TracerProvider) *Service {
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

// Start opens the database (seeding the catalog when asked), consumes the
// command queue and starts serving.
func (s *Service) Start(ctx context.Context) error {
	return s.node.Start(ctx, s.setup)
}

func (s *Service) setup(ctx context.Context) error {
	n := s.node
	store := adapters.NewStore(n.DB, n.Outbox)
	if s.cfg.Seed {
		seeded, err := store.Seed(ctx, adapters.Catalog())
		if err != nil {
			return err
		}
		if seeded {
			n.Logger().InfoContext(ctx, "catalog seeded")
		}
	}
	for _, st := range []bus.Stream{adapters.EventStream(), adapters.CommandStream()} {
		if err := n.Bus.EnsureStream(ctx, st); err != nil {
			return err
		}
	}
	// Every answer is written in the transaction of the outcome it
	// announces, and published by the node's outbox relay.
	commands := &adapters.Commands{
		Reserve: app.NewReserveHandler(store, adapters.Answer),
		Release: app.NewReleaseHandler(store, adapters.ReleaseAnswer),
	}
	n.Consume(adapters.CommandConsumer(), commands.Handlers())
	// The choreographed saga: reserve when a choreographed order is paid.
	choreo := &adapters.Choreography{Store: store, Reserve: commands.Reserve}
	for _, c := range adapters.ChoreographyConsumers() {
		n.Consume(c, choreo.Handlers())
	}

	(&adapters.HTTP{Catalog: store, Logger: n.Logger()}).Routes(n.Mux)
	opts, err := rpc.HandlerOptions(n.Tracer())
	if err != nil {
		return err
	}
	n.Mux.Handle(inventoryv1connect.NewInventoryServiceHandler(&adapters.RPC{Catalog: store}, opts...))
	return nil
}

// Stop drains and closes the service.
func (s *Service) Stop(ctx context.Context) error { return s.node.Stop(ctx) }

// Hook returns the service as a lifecycle hook.
func (s *Service) Hook() runtime.Hook {
	return runtime.Hook{Name: Name, Start: s.Start, Stop: s.Stop}
}

// Addr is the service's listener address once started.
func (s *Service) Addr() string { return s.node.Addr() }

// Package orderview is the query side of orders (CQRS): read models built
// from other contexts' events, never from their databases, and rebuilt from
// the streams at will.
//
//   - orderview: one denormalized row per order, with the customer's name
//     (customer.registered, customer.updated), the payment's status
//     (payment.completed, payment.failed, payment.refunded) and the
//     shipment (order.shipped) copied in, so a read asks nobody.
//   - analytics: the facts of each order, aggregated into revenue per hour,
//     cancellations by reason and saga outcomes and durations per mode.
//
// Each projection reads its streams in order from its checkpoints, which it
// writes in the transactions of the rows they cover.
//
// REST: GET /api/orders, GET /admin/stats, GET /admin/projections,
// GET /admin/projections/{name}, POST /admin/projections/{name}/rebuild.
// Reads the ORDER, PAYMENT and CUSTOMER streams; publishes nothing.
package orderview

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"

	"github.com/mercato-shop/mercato/platform/node"
	"github.com/mercato-shop/mercato/platform/runtime"
	"github.com/mercato-shop/mercato/services/orderview/adapters"
	"github.com/mercato-shop/mercato/services/orderview/app"
	"github.com/mercato-shop/mercato/services/orderview/migrations"
)

// Name is the service's name in discovery.
const Name = "orderview"

// Config configures the orderview service.
type Config struct {
	DSN    string
	BusURL string
	Listen string
	// Resilience guards the service's calls to others: see
	// node.Config.Resilience.
	Resilience []byte
}

// Service is a running orderview service.
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
		Tracer:     tp,
	})}
}

// Start opens the database, starts the projections from their checkpoints
// and starts serving; the projections catch up in the background.
func (s *Service) Start(ctx context.Context) error {
	return s.node.Start(ctx, s.setup)
}

func (s *Service) setup(context.Context) error {
	n := s.node
	cps := adapters.NewCheckpoints(n.DB, n.Logger())
	src := adapters.BusSource{Bus: n.Bus}
	var admin []adapters.ProjectionAdmin
	for _, p := range []adapters.Projection{adapters.Orders{}, adapters.Analytics{}} {
		r := adapters.NewRunner(p, cps, src, n.Logger())
		n.Append(r.Hook())
		admin = append(admin, r)
	}
	store := adapters.NewStore(n.DB)
	h := &adapters.HTTP{
		Orders:      app.NewListOrdersHandler(store),
		Stats:       store,
		Projections: admin,
		Logger:      n.Logger(),
	}
	h.Routes(n.Mux)
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

// Package payment is the payment context: one payment per order, captured
// and refunded through an external payment provider that it reaches only
// through an anti-corruption layer (adapters.Provider).
//
// REST: GET /api/payments?order_id=. RPC: payment.v1.PaymentService
// (GetPayment, ListPayments). Commands on the payment-processing work queue:
// payment.cmd.charge, payment.cmd.refund. Publishes payment.completed,
// payment.failed, payment.refunded through its transactional outbox, each
// in the transaction of the change it announces.
package payment

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/mercato-shop/mercato/api/gen/payment/v1/paymentv1connect"
	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/deadletter"
	"github.com/mercato-shop/mercato/platform/node"
	"github.com/mercato-shop/mercato/platform/rpc"
	"github.com/mercato-shop/mercato/platform/runtime"
	"github.com/mercato-shop/mercato/platform/telemetry"
	"github.com/mercato-shop/mercato/services/payment/adapters"
	"github.com/mercato-shop/mercato/services/payment/app"
	"github.com/mercato-shop/mercato/services/payment/migrations"
)

// Name is the service's name in discovery.
const Name = "payment"

// ProviderTarget names the provider's policies in the resilience file.
const ProviderTarget = "payment-provider"

// Config configures the payment service.
type Config struct {
	DSN    string
	BusURL string
	Listen string
	// ProviderURL is the payment provider's base URL (paysim), required.
	ProviderURL string
	// ProviderTimeout bounds one provider call, retries included; default 5s.
	ProviderTimeout time.Duration
	// Attempts and Backoff bound the retries of a payment-processing
	// command before it goes to the dead letters; zero values keep
	// adapters.CommandConsumer's (20 attempts, exponential backoff).
	Attempts int
	Backoff  []time.Duration
	// Resilience guards the service's calls to others: see
	// node.Config.Resilience.
	Resilience []byte
	// Version is what the instance announces in discovery (canary,
	// blue-green splits pick instances by it); empty for none.
	Version string
}

// Service is a running payment service.
type Service struct {
	cfg  Config
	node *node.Node
}

// New returns the service, not started.
func New(cfg Config, logger *slog.Logger, tp trace.TracerProvider) *Service {
	if cfg.ProviderTimeout <= 0 {
		cfg.ProviderTimeout = adapters.DefaultProviderTimeout
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

// Start opens the database, consumes the payment-processing queue and
// starts serving.
func (s *Service) Start(ctx context.Context) error {
	if s.cfg.ProviderURL == "" {
		return errors.New("payment: ProviderURL is required")
	}
	return s.node.Start(ctx, s.setup)
}

func (s *Service) setup(ctx context.Context) error {
	n := s.node
	store := adapters.NewStore(n.DB, n.Outbox)
	// Calls to the provider are traced like any outgoing request, each
	// attempt a span, under the payment-provider policies.
	var transport http.RoundTripper = otelhttp.NewTransport(n.Transport(),
		otelhttp.WithTracerProvider(n.Tracer()), otelhttp.WithPropagators(telemetry.Propagator()))
	if n.Policies != nil {
		transport = n.Policies.Transport(ProviderTarget, transport)
	}
	client := &http.Client{Transport: transport}
	provider := adapters.NewProvider(s.cfg.ProviderURL, client, s.cfg.ProviderTimeout)

	for _, st := range []bus.Stream{adapters.EventStream(), adapters.CommandStream()} {
		if err := n.Bus.EnsureStream(ctx, st); err != nil {
			return err
		}
	}
	events := adapters.Events{}
	commands := &adapters.Commands{
		Charge: app.NewChargeHandler(store, provider, events),
		Refund: app.NewRefundHandler(store, provider, events),
	}
	queue := adapters.CommandConsumer()
	if s.cfg.Attempts > 0 {
		queue.MaxDeliver = s.cfg.Attempts
	}
	if len(s.cfg.Backoff) > 0 {
		queue.Backoff = s.cfg.Backoff
	}
	n.Consume(queue, commands.Handlers())
	// The choreographed saga: charge on order.created, refund on inventory.failed.
	choreo := &adapters.Choreography{Charge: commands.Charge, Refund: commands.Refund, Payments: store}
	for _, c := range adapters.ChoreographyConsumers() {
		n.Consume(c, choreo.Handlers())
	}

	(&adapters.HTTP{Payments: app.NewOrderPaymentsHandler(store), Logger: n.Logger()}).Routes(n.Mux)
	// The payment-processing queue's dead letters (and every other
	// consumer's: the stream is shared) are administered here.
	deadletter.Routes(n.Mux, n.DeadLetters(), n.Logger())
	opts, err := rpc.HandlerOptions(n.Tracer())
	if err != nil {
		return err
	}
	n.Mux.Handle(paymentv1connect.NewPaymentServiceHandler(&adapters.RPC{Payments: store}, opts...))
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

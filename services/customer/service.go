// Package customer is the customer management context: customers, their
// credentials and roles. It issues the access tokens every other context
// trusts (ES256 JWTs) and serves the public keys that verify them.
//
// REST: POST /api/customers, POST /api/auth/login, GET /api/customers/me,
// GET /.well-known/jwks.json, and POST /oauth/token, where machine clients
// get tokens by the OAuth 2.0 client credentials grant (see
// docs/patterns/machine-clients.md). RPC: customer.v1.CustomerService.
// Publishes customer.registered. Consumes order.created, order.confirmed,
// order.cancelled and order.shipped into each customer's order history,
// whose latest orders GET /api/customers/me shows as recent_orders.
package customer

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/mercato-shop/mercato/api/gen/customer/v1/customerv1connect"
	"github.com/mercato-shop/mercato/platform/node"
	"github.com/mercato-shop/mercato/platform/rpc"
	"github.com/mercato-shop/mercato/platform/runtime"
	"github.com/mercato-shop/mercato/services/customer/adapters"
	"github.com/mercato-shop/mercato/services/customer/app"
	"github.com/mercato-shop/mercato/services/customer/migrations"
)

// Name is the service's name in discovery.
const Name = "customer"

// Config configures the customer service.
type Config struct {
	DSN    string
	BusURL string
	Listen string
	// Tokens: who issues them, for whom, and for how long.
	Issuer   string
	Audience string
	TokenTTL time.Duration
	// AdminPassword sets the admin account's password; empty keeps an
	// existing one, or generates one for a new account (see AdminPassword()).
	AdminPassword string
	// Clients are the machine clients of POST /oauth/token, stored (secrets
	// hashed) at start; a stored client with the same ID is replaced, so a
	// changed secret takes effect on restart.
	Clients []Client
	// Resilience guards the service's calls to others: see
	// node.Config.Resilience.
	Resilience []byte
	// Version is what the instance announces in discovery (canary,
	// blue-green splits pick instances by it); empty for none.
	Version string
}

// Client is a machine client of the client credentials grant. Its tokens
// carry sub "client:<ID>", client_id, scope (by default all of Scopes) and
// roles (Roles, which gateway routes check as for people).
type Client struct {
	ID string // 1 to 64 letters, digits, '.', '_' or '-'
	// Secret: at least 32 characters of A-Z a-z 0-9 - . _ ~, at random
	// (openssl rand -hex 32). Only its SHA-256 is stored.
	Secret string
	Name   string
	Scopes []string // at least one
	Roles  []string
}

// String, GoString, LogValue and MarshalJSON mask the secret, so a
// configuration printed, logged or dumped as JSON never shows it.
func (c Client) String() string {
	return fmt.Sprintf("{ID:%s Secret:*** Name:%s Scopes:%v Roles:%v}", c.ID, c.Name, c.Scopes, c.Roles)
}

func (c Client) GoString() string { return c.String() }

func (c Client) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", c.ID), slog.String("secret", "***"), slog.String("name", c.Name),
		slog.Any("scopes", c.Scopes), slog.Any("roles", c.Roles))
}

func (c Client) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		ID, Secret, Name string
		Scopes, Roles    []string
	}{c.ID, "***", c.Name, c.Scopes, c.Roles})
}

// Service is a running customer service.
type Service struct {
	cfg       Config
	node      *node.Node
	generated string
}

// New returns the service, not started.
func New(cfg Config, logger *slog.Logger, tp trace.TracerProvider) *Service {
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = 15 * time.Minute
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

// Start opens the database, ensures the signing key, the admin account and
// the configured clients, and starts serving.
func (s *Service) Start(ctx context.Context) error {
	return s.node.Start(ctx, s.setup)
}

func (s *Service) setup(ctx context.Context) error {
	n := s.node
	if err := n.Bus.EnsureStream(ctx, adapters.Stream()); err != nil {
		return err
	}
	store := adapters.NewStore(n.DB, n.Outbox)
	signer, err := adapters.NewSigner(ctx, n.DB, adapters.TokenConfig{Issuer: s.cfg.Issuer, Audience: s.cfg.Audience, TTL: s.cfg.TokenTTL})
	if err != nil {
		return err
	}
	if s.generated, err = app.EnsureAdmin(ctx, store, s.cfg.AdminPassword); err != nil {
		return err
	}
	clients := adapters.NewClients(n.DB)
	specs := make([]app.ClientSpec, len(s.cfg.Clients))
	for i, c := range s.cfg.Clients {
		specs[i] = app.ClientSpec{ID: c.ID, Secret: c.Secret, Name: c.Name, Scopes: c.Scopes, Roles: c.Roles}
	}
	if err := app.EnsureClients(ctx, clients, specs); err != nil {
		return err
	}
	jwks, err := signer.JWKS()
	if err != nil {
		return fmt.Errorf("encode key set: %w", err)
	}
	login, err := app.NewLoginHandler(store, signer)
	if err != nil {
		return err
	}
	h := &adapters.HTTP{
		Register:    app.NewRegisterHandler(store, adapters.Registered),
		Login:       login,
		ClientToken: app.NewClientTokenHandler(clients, signer),
		Query:       store,
		History:     store,
		JWKS:        jwks,
		Logger:      n.Logger(),
	}
	h.Routes(n.Mux)
	n.Consume(adapters.HistoryConsumer(), (&adapters.OrderEvents{History: store}).Handlers())

	opts, err := rpc.HandlerOptions(n.Tracer())
	if err != nil {
		return err
	}
	n.Mux.Handle(customerv1connect.NewCustomerServiceHandler(&adapters.RPC{Query: store}, opts...))
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

// AdminPassword returns the password generated for the admin account on
// this start, or "" when none was generated.
func (s *Service) AdminPassword() string { return s.generated }

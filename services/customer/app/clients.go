package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mercato-shop/mercato/services/customer/domain"
)

// ClientSpec is a machine client as configured: its secret in clear, to be
// hashed before it is stored.
type ClientSpec struct {
	ID, Secret, Name string
	Scopes, Roles    []string
}

type clientSaver interface {
	Save(ctx context.Context, c *domain.Client) error
}

// EnsureClients stores every configured client, replacing the secret, name,
// scopes and roles of one already stored, so that a changed secret takes
// effect on the next start. Clients stored but no longer configured stay.
func EnsureClients(ctx context.Context, store clientSaver, specs []ClientSpec) error {
	// All are checked before any is stored, so a bad configuration changes nothing.
	clients := make([]*domain.Client, 0, len(specs))
	seen := make(map[string]bool, len(specs))
	now := time.Now()
	for _, s := range specs {
		if seen[s.ID] {
			return fmt.Errorf("client %q is configured twice", s.ID)
		}
		seen[s.ID] = true
		c, err := domain.NewClient(s.ID, s.Name, s.Secret, s.Scopes, s.Roles, now)
		if err != nil {
			// The error names fields, never the secret's value.
			return fmt.Errorf("client %q: %w", s.ID, err)
		}
		clients = append(clients, c)
	}
	for _, c := range clients {
		if err := store.Save(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// ClientToken is the command of the client credentials grant: the client's
// credentials and the scopes it asks for (none: all of its scopes).
type ClientToken struct {
	ClientID, Secret string
	Scopes           []string
}

// ClientGrant is an issued client token and the scopes it carries.
type ClientGrant struct {
	Token
	Scopes []string
}

type clientByID interface {
	ClientByID(ctx context.Context, id string) (*domain.Client, error)
}

type clientTokenIssuer interface {
	IssueClient(ctx context.Context, c *domain.Client, scopes []string) (Token, error)
}

// ClientTokenHandler authenticates machine clients and issues their access
// tokens (OAuth 2.0 client credentials grant, RFC 6749 section 4.4).
type ClientTokenHandler struct {
	clients clientByID
	tokens  clientTokenIssuer
	// dummy is compared against when the client is unknown, so that an
	// unknown client and a wrong secret do the same work.
	dummy *domain.Client
}

// NewClientTokenHandler returns the handler.
func NewClientTokenHandler(clients clientByID, tokens clientTokenIssuer) ClientTokenHandler {
	return ClientTokenHandler{
		clients: clients,
		tokens:  tokens,
		dummy:   domain.RestoreClient("", "", domain.HashClientSecret("not-a-real-secret"), nil, nil, time.Time{}),
	}
}

// Handle returns a token, domain.ErrInvalidClient or domain.ErrInvalidScope.
func (h ClientTokenHandler) Handle(ctx context.Context, cmd ClientToken) (ClientGrant, error) {
	c, err := h.clients.ClientByID(ctx, cmd.ClientID)
	if errors.Is(err, domain.ErrClientNotFound) {
		h.dummy.VerifySecret(cmd.Secret)
		return ClientGrant{}, domain.ErrInvalidClient
	}
	if err != nil {
		return ClientGrant{}, err
	}
	if !c.VerifySecret(cmd.Secret) {
		return ClientGrant{}, domain.ErrInvalidClient
	}
	scopes, err := c.Grant(cmd.Scopes)
	if err != nil {
		return ClientGrant{}, err
	}
	t, err := h.tokens.IssueClient(ctx, c, scopes)
	if err != nil {
		return ClientGrant{}, err
	}
	return ClientGrant{Token: t, Scopes: scopes}, nil
}

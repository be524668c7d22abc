package adapters

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/services/customer/domain"
)

// Clients keeps the machine clients of the client credentials grant in the
// service's own database.
type Clients struct {
	db *storage.DB
}

// NewClients returns the client store on db.
func NewClients(db *storage.DB) *Clients { return &Clients{db: db} }

// Save inserts c or, when its id exists, replaces its secret hash, name,
// scopes and roles; the first created_at stays.
func (s *Clients) Save(ctx context.Context, c *domain.Client) error {
	_, err := s.db.ExecContext(ctx, `
INSERT INTO clients (client_id, secret_hash, name, scopes, roles, created_at) VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (client_id) DO UPDATE SET
    secret_hash = excluded.secret_hash, name = excluded.name, scopes = excluded.scopes, roles = excluded.roles`,
		c.ID(), c.SecretHash(), c.Name(), strings.Join(c.Scopes(), " "), strings.Join(c.Roles(), ","), c.CreatedAt().UnixMicro())
	if err != nil {
		return fmt.Errorf("save client %s: %w", c.ID(), err)
	}
	return nil
}

// ClientByID finds a client, or returns domain.ErrClientNotFound.
func (s *Clients) ClientByID(ctx context.Context, id string) (*domain.Client, error) {
	var (
		name, hash, scopes, roles string
		created                   int64
	)
	err := s.db.QueryRowContext(ctx,
		`SELECT name, secret_hash, scopes, roles, created_at FROM clients WHERE client_id = $1`, id).
		Scan(&name, &hash, &scopes, &roles, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, domain.ErrClientNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("select client %s: %w", id, err)
	}
	return domain.RestoreClient(id, name, hash, strings.Fields(scopes), splitNonEmpty(roles, ","), time.UnixMicro(created)), nil
}

// splitNonEmpty splits s at sep, and an empty s into no elements.
func splitNonEmpty(s, sep string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, sep)
}

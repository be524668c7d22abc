// Package app holds the customer context's use cases: one handler per
// command (register, log in, ensure the admin account) and per query. Each
// takes the small interfaces it needs, so adapters plug in from service.go.
package app

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/services/customer/domain"
)

// Register is the command to open a customer account.
type Register struct {
	Email, Name, Password string
}

// customerAdder stores a customer and, in the same transaction, the events
// that announce it.
type customerAdder interface {
	Add(ctx context.Context, c *domain.Customer, events ...bus.Event) error
}

// RegisterHandler opens accounts and announces them as customer.registered.
type RegisterHandler struct {
	repo     customerAdder
	announce func(*domain.Customer) bus.Event
	now      func() time.Time
}

// NewRegisterHandler returns a handler that announces each new account with
// the event announce maps it to.
func NewRegisterHandler(repo customerAdder, announce func(*domain.Customer) bus.Event) RegisterHandler {
	return RegisterHandler{repo: repo, announce: announce, now: time.Now}
}

// Handle returns the new customer, a *domain.ValidationError, or
// domain.ErrEmailTaken.
func (h RegisterHandler) Handle(ctx context.Context, cmd Register) (*domain.Customer, error) {
	c, err := domain.NewCustomer(cmd.Email, cmd.Name, cmd.Password, nil, h.now(), domain.HashPassword)
	if err != nil {
		return nil, err
	}
	// The account and its announcement commit together (transactional outbox).
	if err := h.repo.Add(ctx, c, h.announce(c)); err != nil {
		return nil, err
	}
	return c, nil
}

// Token is an issued access token.
type Token struct {
	AccessToken string
	ExpiresIn   time.Duration
}

type customerByEmail interface {
	ByEmail(ctx context.Context, email string) (*domain.Customer, error)
}

type tokenIssuer interface {
	Issue(ctx context.Context, c *domain.Customer) (Token, error)
}

// LoginHandler checks credentials and issues an access token.
type LoginHandler struct {
	repo   customerByEmail
	tokens tokenIssuer
	// dummy is verified against when the email is unknown, so that a wrong
	// email and a wrong password take the same time.
	dummy string
}

func NewLoginHandler(repo customerByEmail, tokens tokenIssuer) (LoginHandler, error) {
	dummy, err := domain.HashPassword("not-a-real-password")
	if err != nil {
		return LoginHandler{}, err
	}
	return LoginHandler{repo: repo, tokens: tokens, dummy: dummy}, nil
}

// Handle returns a token, or domain.ErrInvalidCredentials.
func (h LoginHandler) Handle(ctx context.Context, email, password string) (Token, error) {
	normalized, err := domain.NormalizeEmail(email)
	if err != nil {
		_, _ = domain.VerifyPassword(h.dummy, password)
		return Token{}, domain.ErrInvalidCredentials
	}
	c, err := h.repo.ByEmail(ctx, normalized)
	if errors.Is(err, domain.ErrNotFound) {
		_, _ = domain.VerifyPassword(h.dummy, password)
		return Token{}, domain.ErrInvalidCredentials
	}
	if err != nil {
		return Token{}, err
	}
	ok, err := domain.VerifyPassword(c.PasswordHash(), password)
	if err != nil {
		return Token{}, fmt.Errorf("verify password of %s: %w", c.ID(), err)
	}
	if !ok {
		return Token{}, domain.ErrInvalidCredentials
	}
	return h.tokens.Issue(ctx, c)
}

type adminStore interface {
	customerAdder
	customerByEmail
	UpdatePassword(ctx context.Context, c *domain.Customer) error
}

// AdminEmail is the account that holds the admin role.
const AdminEmail = "admin@mercato.local"

// EnsureAdmin makes sure the admin account exists. With a password, the
// account is created with it or has its password reset to it. Without one, a
// missing account is created with a random password, returned as generated so
// that it can be shown once; an existing account is left alone.
func EnsureAdmin(ctx context.Context, store adminStore, password string) (generated string, err error) {
	c, err := store.ByEmail(ctx, AdminEmail)
	switch {
	case errors.Is(err, domain.ErrNotFound):
		if password == "" {
			generated = rand.Text()
			password = generated
		}
		c, err := domain.NewCustomer(AdminEmail, "Administrator", password, []string{domain.RoleAdmin}, time.Now(), domain.HashPassword)
		if err != nil {
			return "", fmt.Errorf("admin account: %w", err)
		}
		if err := store.Add(ctx, c); err != nil {
			return "", fmt.Errorf("admin account: %w", err)
		}
		return generated, nil
	case err != nil:
		return "", fmt.Errorf("admin account: %w", err)
	case password == "":
		return "", nil
	}
	if ok, err := domain.VerifyPassword(c.PasswordHash(), password); err == nil && ok {
		return "", nil
	}
	if err := c.SetPassword(password, domain.HashPassword); err != nil {
		return "", fmt.Errorf("admin account: %w", err)
	}
	if err := store.UpdatePassword(ctx, c); err != nil {
		return "", fmt.Errorf("admin account: %w", err)
	}
	return "", nil
}

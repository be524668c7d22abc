// Package domain is the customer context's model: customers, their
// credentials and roles. It does no I/O.
package domain

import (
	"errors"
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Roles a customer account can hold.
const (
	RoleCustomer = "customer"
	RoleAdmin    = "admin"
)

// Password length bounds (NIST SP 800-63B: at least 8, allow long passphrases).
const (
	MinPasswordLen = 8
	MaxPasswordLen = 128
)

var (
	// ErrEmailTaken: another customer registered with this email.
	ErrEmailTaken = errors.New("email already registered")
	// ErrNotFound: no such customer.
	ErrNotFound = errors.New("customer not found")
	// ErrInvalidCredentials: unknown email or wrong password; which one is not told.
	ErrInvalidCredentials = errors.New("invalid email or password")
)

// FieldError names an invalid input field.
type FieldError struct {
	Field   string
	Message string
}

// ValidationError lists every invalid field of a request.
type ValidationError struct {
	Fields []FieldError
}

func (e *ValidationError) Error() string {
	msgs := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		msgs[i] = f.Field + " " + f.Message
	}
	return "invalid fields: " + strings.Join(msgs, "; ")
}

// Customer is a registered account. Build one with NewCustomer or Restore.
type Customer struct {
	id           string
	email        string
	name         string
	roles        []string
	passwordHash string
	createdAt    time.Time
}

// NewCustomer validates a registration and returns the new customer with a
// UUIDv7 id. hash turns the (valid) password into its stored form.
func NewCustomer(email, name, password string, roles []string, now time.Time, hash func(string) (string, error)) (*Customer, error) {
	var errs []FieldError
	normalized, err := NormalizeEmail(email)
	if err != nil {
		errs = append(errs, FieldError{"email", err.Error()})
	}
	name = strings.TrimSpace(name)
	if n := utf8.RuneCountInString(name); n == 0 || n > 100 {
		errs = append(errs, FieldError{"name", "must be 1 to 100 characters"})
	}
	if n := utf8.RuneCountInString(password); n < MinPasswordLen || n > MaxPasswordLen {
		errs = append(errs, FieldError{"password", "must be 8 to 128 characters"})
	}
	if len(roles) == 0 {
		roles = []string{RoleCustomer}
	}
	for _, r := range roles {
		if r != RoleCustomer && r != RoleAdmin {
			errs = append(errs, FieldError{"roles", "unknown role " + r})
		}
	}
	if len(errs) > 0 {
		return nil, &ValidationError{Fields: errs}
	}
	h, err := hash(password)
	if err != nil {
		return nil, err
	}
	return &Customer{
		id:           uuid.Must(uuid.NewV7()).String(),
		email:        normalized,
		name:         name,
		roles:        roles,
		passwordHash: h,
		createdAt:    now.UTC(),
	}, nil
}

// Restore rebuilds a customer from storage.
func Restore(id, email, name string, roles []string, passwordHash string, createdAt time.Time) *Customer {
	return &Customer{id: id, email: email, name: name, roles: roles, passwordHash: passwordHash, createdAt: createdAt.UTC()}
}

// NormalizeEmail checks that s is a bare address (no display name) and
// returns it lower-cased, so that emails compare equal however typed.
func NormalizeEmail(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", errors.New("is required")
	}
	if len(s) > 254 {
		return "", errors.New("is longer than 254 characters")
	}
	addr, err := mail.ParseAddress(s)
	if err != nil || addr.Name != "" || addr.Address != s {
		return "", errors.New("is not an email address")
	}
	at := strings.LastIndexByte(s, '@')
	if !strings.Contains(s[at+1:], ".") {
		return "", errors.New("is not an email address")
	}
	return strings.ToLower(s), nil
}

func (c *Customer) ID() string           { return c.id }
func (c *Customer) Email() string        { return c.email }
func (c *Customer) Name() string         { return c.name }
func (c *Customer) Roles() []string      { return append([]string(nil), c.roles...) }
func (c *Customer) PasswordHash() string { return c.passwordHash }
func (c *Customer) CreatedAt() time.Time { return c.createdAt }

// HasRole reports whether the customer holds role.
func (c *Customer) HasRole(role string) bool {
	for _, r := range c.roles {
		if r == role {
			return true
		}
	}
	return false
}

// SetPassword replaces the stored password after checking its length.
func (c *Customer) SetPassword(password string, hash func(string) (string, error)) error {
	if n := utf8.RuneCountInString(password); n < MinPasswordLen || n > MaxPasswordLen {
		return &ValidationError{Fields: []FieldError{{"password", "must be 8 to 128 characters"}}}
	}
	h, err := hash(password)
	if err != nil {
		return err
	}
	c.passwordHash = h
	return nil
}

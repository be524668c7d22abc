package domain

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// MinClientSecretLen is the shortest client secret accepted: 32 characters
// of the URL-unreserved set carry at least 128 bits when generated at random
// (openssl rand -hex 32 gives 64).
const MinClientSecretLen = 32

var (
	// ErrInvalidClient: unknown client or wrong secret; which one is not told.
	ErrInvalidClient = errors.New("invalid client credentials")
	// ErrInvalidScope: a requested scope is malformed or not granted to the client.
	ErrInvalidScope = errors.New("invalid scope")
	// ErrClientNotFound: no client with this id.
	ErrClientNotFound = errors.New("client not found")
)

// Client is a machine client of the OAuth 2.0 client credentials grant (RFC
// 6749 section 4.4): a reporting job or a partner acting on its own behalf.
// Build one with NewClient or RestoreClient.
type Client struct {
	id         string
	name       string
	secretHash string
	scopes     []string
	roles      []string
	createdAt  time.Time
}

// NewClient validates a client's registration and returns it holding only
// the hash of secret.
func NewClient(id, name, secret string, scopes, roles []string, now time.Time) (*Client, error) {
	var errs []FieldError
	if !validClientID(id) {
		errs = append(errs, FieldError{"id", "must be 1 to 64 letters, digits, '.', '_' or '-'"})
	}
	name = strings.TrimSpace(name)
	if n := utf8.RuneCountInString(name); n == 0 || n > 100 {
		errs = append(errs, FieldError{"name", "must be 1 to 100 characters"})
	}
	if !validClientSecret(secret) {
		errs = append(errs, FieldError{"secret", "must be 32 to 256 letters, digits, '-', '.', '_' or '~' (openssl rand -hex 32)"})
	}
	if len(scopes) == 0 {
		errs = append(errs, FieldError{"scopes", "must name at least one scope"})
	}
	for _, s := range scopes {
		if !ValidScope(s) {
			errs = append(errs, FieldError{"scopes", "malformed scope " + s})
		}
	}
	for _, r := range roles {
		if !validRole(r) {
			errs = append(errs, FieldError{"roles", "malformed role " + r})
		}
	}
	if len(errs) > 0 {
		return nil, &ValidationError{Fields: errs}
	}
	return &Client{
		id: id, name: name, secretHash: HashClientSecret(secret),
		scopes: dedupe(scopes), roles: dedupe(roles), createdAt: now.UTC(),
	}, nil
}

// RestoreClient rebuilds a stored client; it does not validate.
func RestoreClient(id, name, secretHash string, scopes, roles []string, createdAt time.Time) *Client {
	return &Client{id: id, name: name, secretHash: secretHash, scopes: scopes, roles: roles, createdAt: createdAt.UTC()}
}

func (c *Client) ID() string           { return c.id }
func (c *Client) Name() string         { return c.name }
func (c *Client) SecretHash() string   { return c.secretHash }
func (c *Client) Scopes() []string     { return slices.Clone(c.scopes) }
func (c *Client) Roles() []string      { return slices.Clone(c.roles) }
func (c *Client) CreatedAt() time.Time { return c.createdAt }

// Subject is the token subject of the client, apart from customers' UUIDs.
func (c *Client) Subject() string { return "client:" + c.id }

// HashClientSecret returns the hex SHA-256 of secret. A fast hash is enough:
// a client secret is a random string of at least 128 bits, not a password a
// person chose, so no dictionary applies and brute force is out of reach;
// a slow hash (argon2id costs 19 MiB a call) would only make every token
// request of a busy client expensive.
func HashClientSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// VerifySecret reports whether secret is the client's, in constant time.
func (c *Client) VerifySecret(secret string) bool {
	return subtle.ConstantTimeCompare([]byte(HashClientSecret(secret)), []byte(c.secretHash)) == 1
}

// Grant returns the scopes to put in a token for a request of requested:
// all of the client's scopes when requested is empty, else requested in the
// client's order, or ErrInvalidScope when one is not the client's.
func (c *Client) Grant(requested []string) ([]string, error) {
	if len(requested) == 0 {
		return c.Scopes(), nil
	}
	for _, s := range requested {
		if !slices.Contains(c.scopes, s) {
			return nil, ErrInvalidScope
		}
	}
	var granted []string
	for _, s := range c.scopes {
		if slices.Contains(requested, s) {
			granted = append(granted, s)
		}
	}
	return granted, nil
}

// ValidScope reports whether s is a scope-token of RFC 6749 section 3.3:
// printable ASCII other than space, '"' and '\'.
func ValidScope(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := range len(s) {
		if c := s[i]; c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

func validClientID(id string) bool {
	return len(id) >= 1 && len(id) <= 64 && onlyChars(id, "._-")
}

// validClientSecret keeps secrets to the characters that form-urlencoding
// leaves alone, so a client that encodes them for HTTP Basic (as RFC 6749
// section 2.3.1 asks) and one that does not (curl -u) send the same bytes.
func validClientSecret(s string) bool {
	return len(s) >= MinClientSecretLen && len(s) <= 256 && onlyChars(s, "-._~")
}

// validRole keeps roles safe for the comma-separated roles header the
// gateway forwards.
func validRole(r string) bool {
	return len(r) >= 1 && len(r) <= 64 && onlyChars(r, "_-")
}

func onlyChars(s, extra string) bool {
	for i := range len(s) {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(extra, c) >= 0) {
			return false
		}
	}
	return true
}

func dedupe(xs []string) []string {
	out := make([]string, 0, len(xs))
	for _, x := range xs {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

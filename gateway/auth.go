package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mercato-shop/mercato/platform/web"
)

// errNoToken: the request carries no bearer token.
var errNoToken = errors.New("missing bearer token")

// claims are the parts of an access token the gateway reads.
type claims struct {
	jwt.RegisteredClaims
	Roles []string `json:"roles"`
}

// authenticator verifies access tokens against the issuer's key set. The
// algorithm is pinned to ES256, so neither "none" nor an HMAC token signed
// with the public key can pass; exp, iss and aud are required.
type authenticator struct {
	parser  *jwt.Parser
	keyfunc jwt.Keyfunc
}

func newAuthenticator(cfg JWTConfig, keyfunc jwt.Keyfunc) *authenticator {
	return &authenticator{
		keyfunc: keyfunc,
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodES256.Alg()}),
			jwt.WithIssuer(cfg.Issuer),
			jwt.WithAudience(cfg.Audience),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(5*time.Second),
		),
	}
}

// verify returns the caller named by the request's bearer token.
func (a *authenticator) verify(r *http.Request) (web.Caller, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return web.Caller{}, errNoToken
	}
	scheme, raw, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || raw == "" {
		return web.Caller{}, errors.New("the Authorization header must be: Bearer <token>")
	}
	var c claims
	if _, err := a.parser.ParseWithClaims(strings.TrimSpace(raw), &c, a.keyfunc); err != nil {
		return web.Caller{}, fmt.Errorf("invalid token: %w", reason(err))
	}
	if c.Subject == "" {
		return web.Caller{}, errors.New("invalid token: no subject")
	}
	for _, role := range c.Roles {
		// Roles travel in a comma-separated header.
		if role == "" || strings.ContainsAny(role, ", \r\n") {
			return web.Caller{}, errors.New("invalid token: malformed roles")
		}
	}
	return web.Caller{Subject: c.Subject, Roles: c.Roles}, nil
}

// reason keeps the one cause a client can act on.
func reason(err error) error {
	for _, known := range []error{
		jwt.ErrTokenExpired, jwt.ErrTokenNotValidYet, jwt.ErrTokenInvalidAudience, jwt.ErrTokenInvalidIssuer,
		jwt.ErrTokenRequiredClaimMissing, jwt.ErrTokenSignatureInvalid, jwt.ErrTokenUnverifiable, jwt.ErrTokenMalformed,
	} {
		if errors.Is(err, known) {
			return known
		}
	}
	return jwt.ErrTokenUnverifiable
}

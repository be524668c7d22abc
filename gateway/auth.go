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
//
// A token that verified is remembered for a while (see verified), so a
// client polling with one token pays for the signature check once, not per
// request: an ECDSA verification costs more than the rest of the gateway's
// work on a request.
type authenticator struct {
	parser   *jwt.Parser
	keyfunc  jwt.Keyfunc
	verified *verified
}

func newAuthenticator(cfg JWTConfig, keyfunc jwt.Keyfunc) *authenticator {
	return &authenticator{
		keyfunc:  keyfunc,
		verified: newVerified(verifiedSize, verifiedTTL, time.Now),
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
	raw = strings.TrimSpace(raw)
	if caller, ok := a.verified.get(raw); ok {
		return caller, nil
	}
	var c claims
	if _, err := a.parser.ParseWithClaims(raw, &c, a.keyfunc); err != nil {
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
	caller := web.Caller{Subject: c.Subject, Roles: c.Roles}
	a.verified.put(raw, caller, c.ExpiresAt.Time) // exp is required, so set
	return caller, nil
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

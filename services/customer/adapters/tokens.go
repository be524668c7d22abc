package adapters

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/services/customer/app"
	"github.com/mercato-shop/mercato/services/customer/domain"
)

// TokenConfig says how access tokens are issued.
type TokenConfig struct {
	Issuer   string
	Audience string
	TTL      time.Duration
}

// Claims are the claims of an access token.
type Claims struct {
	jwt.RegisteredClaims
	Email string   `json:"email"`
	Roles []string `json:"roles"`
}

// ClientClaims are the claims of a machine client's access token (client
// credentials grant): sub is "client:<client_id>", and scope holds the
// granted scopes space-separated, as RFC 9068 and RFC 8693 name them.
type ClientClaims struct {
	jwt.RegisteredClaims
	ClientID string   `json:"client_id"`
	Scope    string   `json:"scope"`
	Roles    []string `json:"roles"`
}

// JWK is one public key of the key set (RFC 7517, EC P-256).
type JWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
}

// Signer issues ES256 access tokens with a key kept in the service's
// database, and publishes the public keys as a JWK set.
type Signer struct {
	cfg  TokenConfig
	key  *ecdsa.PrivateKey
	kid  string
	jwks []JWK
	now  func() time.Time
}

// NewSigner loads the signing keys, creating the first one on first start.
// The newest key signs; every stored key stays in the JWK set, so tokens
// signed before a rotation still verify.
func NewSigner(ctx context.Context, db *storage.DB, cfg TokenConfig) (*Signer, error) {
	keys, err := loadKeys(ctx, db)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		if err := createKey(ctx, db); err != nil {
			return nil, err
		}
		// Read back: another instance may have created its key first.
		if keys, err = loadKeys(ctx, db); err != nil {
			return nil, err
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("no signing key after creating one")
	}
	s := &Signer{cfg: cfg, key: keys[0], now: time.Now}
	for i, k := range keys {
		jwk := publicJWK(&k.PublicKey)
		if i == 0 {
			s.kid = jwk.Kid
		}
		s.jwks = append(s.jwks, jwk)
	}
	return s, nil
}

// Issue signs a token for c.
func (s *Signer) Issue(_ context.Context, c *domain.Customer) (app.Token, error) {
	claims := Claims{
		RegisteredClaims: s.registered(c.ID(), s.now().UTC()),
		Email:            c.Email(),
		Roles:            c.Roles(),
	}
	return s.sign(claims)
}

// IssueClient signs a token for client c with the granted scopes, with the
// same key, issuer, audience and lifetime as customers' tokens.
func (s *Signer) IssueClient(_ context.Context, c *domain.Client, scopes []string) (app.Token, error) {
	now := s.now().UTC()
	roles := c.Roles()
	if roles == nil {
		roles = []string{} // "roles": [], not null
	}
	claims := ClientClaims{
		RegisteredClaims: s.registered(c.Subject(), now),
		ClientID:         c.ID(),
		Scope:            strings.Join(scopes, " "),
		Roles:            roles,
	}
	return s.sign(claims)
}

// registered returns the registered claims of a token for subject issued at now.
func (s *Signer) registered(subject string, now time.Time) jwt.RegisteredClaims {
	return jwt.RegisteredClaims{
		Issuer:    s.cfg.Issuer,
		Subject:   subject,
		Audience:  jwt.ClaimStrings{s.cfg.Audience},
		ExpiresAt: jwt.NewNumericDate(now.Add(s.cfg.TTL)),
		NotBefore: jwt.NewNumericDate(now),
		IssuedAt:  jwt.NewNumericDate(now),
		ID:        uuid.Must(uuid.NewV7()).String(),
	}
}

func (s *Signer) sign(claims jwt.Claims) (app.Token, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	t.Header["kid"] = s.kid
	signed, err := t.SignedString(s.key)
	if err != nil {
		return app.Token{}, fmt.Errorf("sign token: %w", err)
	}
	return app.Token{AccessToken: signed, ExpiresIn: s.cfg.TTL}, nil
}

// JWKS returns the public key set as JSON.
func (s *Signer) JWKS() ([]byte, error) {
	return json.Marshal(struct {
		Keys []JWK `json:"keys"`
	}{s.jwks})
}

func loadKeys(ctx context.Context, db *storage.DB) ([]*ecdsa.PrivateKey, error) {
	rows, err := db.QueryContext(ctx, `SELECT private_key FROM signing_keys WHERE algorithm = 'ES256' ORDER BY created_at DESC, kid`)
	if err != nil {
		return nil, fmt.Errorf("load signing keys: %w", err)
	}
	defer rows.Close()
	var keys []*ecdsa.PrivateKey
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return nil, fmt.Errorf("load signing keys: %w", err)
		}
		block, _ := pem.Decode([]byte(p))
		if block == nil {
			return nil, errors.New("load signing keys: not PEM")
		}
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("load signing keys: %w", err)
		}
		ec, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, errors.New("load signing keys: not an ECDSA key")
		}
		keys = append(keys, ec)
	}
	return keys, rows.Err()
}

func createKey(ctx context.Context, db *storage.DB) error {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return fmt.Errorf("encode signing key: %w", err)
	}
	p := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	_, err = db.ExecContext(ctx,
		`INSERT INTO signing_keys (kid, algorithm, private_key, created_at) VALUES ($1, 'ES256', $2, $3) ON CONFLICT (kid) DO NOTHING`,
		publicJWK(&k.PublicKey).Kid, string(p), time.Now().UnixMicro())
	if err != nil {
		return fmt.Errorf("store signing key: %w", err)
	}
	return nil
}

func publicJWK(pub *ecdsa.PublicKey) JWK {
	b64 := base64.RawURLEncoding
	// Uncompressed point: 0x04 || X || Y, 32 bytes each on P-256.
	pt, _ := pub.ECDH()
	raw := pt.Bytes()
	x, y := b64.EncodeToString(raw[1:33]), b64.EncodeToString(raw[33:65])
	// RFC 7638 thumbprint: members in lexicographic order, no spaces.
	sum := sha256.Sum256([]byte(`{"crv":"P-256","kty":"EC","x":"` + x + `","y":"` + y + `"}`))
	return JWK{Kty: "EC", Crv: "P-256", X: x, Y: y, Kid: b64.EncodeToString(sum[:]), Use: "sig", Alg: "ES256"}
}

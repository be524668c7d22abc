// Package e2e tests the running shop from the outside: it starts everything
// as `mercato up` does, on a temporary data directory, and talks only to the
// gateway, as a client would.
package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mercato-shop/mercato/shop"
)

// client talks to the gateway of a running shop.
type client struct {
	t    *testing.T
	base string
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func (c client) do(method, path, token string, body any, header ...string) response {
	c.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	// Tests read what they just changed (stock after an order, a probe of
	// a failing service): past the gateway's cache. TestShop_CatalogIsCached
	// sends its own headers.
	req.Header.Set("Cache-Control", "no-cache")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// expectProblem checks an RFC 9457 answer with status.
func (c client) expectProblem(r response, status int, what string) {
	c.t.Helper()
	if r.status != status {
		c.t.Fatalf("%s: status %d, want %d: %s", what, r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		c.t.Fatalf("%s: content type %q, want application/problem+json", what, ct)
	}
	var p struct {
		Status int    `json:"status"`
		Title  string `json:"title"`
	}
	r.json(c.t, &p)
	if p.Status != status || p.Title == "" {
		c.t.Fatalf("%s: problem %s", what, r.body)
	}
}

func startShop(t *testing.T, data string, options ...func(*shop.Config)) (*shop.Shop, client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := shop.Config{
		Addr:          "127.0.0.1:0",
		DataDir:       data,
		AdminPassword: "admin password",
		LogOutput:     io.Discard,
		// Orders stay CONFIRMED for the length of a test unless it ships them.
		ShipAfter: time.Hour,
		// Tests poll as fast as scripts do, which the rate limits stop:
		// TestShop_RateLimits runs the shop with them.
		NoRateLimits: true,
	}
	for _, o := range options {
		o(&cfg)
	}
	s, err := shop.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, client{t: t, base: "http://" + s.GatewayAddr()}
}

func stopShop(t *testing.T, s *shop.Shop) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
}

type token struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
}

func TestShop_Foundation(t *testing.T) {
	data := t.TempDir()
	s, c := startShop(t, data)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			stopShop(t, s)
		}
	})

	// Register, and the same email again.
	ann := map[string]string{"email": "ann@example.com", "name": "Ann", "password": "correct horse"}
	r := c.do("POST", "/api/customers", "", ann)
	if r.status != http.StatusCreated {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	var customer struct{ ID, Email, Name string }
	r.json(t, &customer)
	if customer.ID == "" || customer.Email != "ann@example.com" || customer.Name != "Ann" {
		t.Fatalf("registered %s", r.body)
	}
	c.expectProblem(c.do("POST", "/api/customers", "", map[string]string{"email": "ANN@example.com", "name": "Ann 2", "password": "correct horse"}), http.StatusConflict, "duplicate email")

	// Bad registrations: nothing is written.
	c.expectProblem(c.do("POST", "/api/customers", "", `{"email":"bob@example.com",`), http.StatusBadRequest, "malformed JSON")
	c.expectProblem(c.do("POST", "/api/customers", "", `{"email":"bob@example.com","name":"Bob","password":"correct horse","role":"admin"}`), http.StatusBadRequest, "unknown field")
	c.expectProblem(c.do("POST", "/api/customers", "", map[string]string{"email": "bob", "name": "Bob", "password": "correct horse"}), http.StatusBadRequest, "not an email")
	c.expectProblem(c.do("POST", "/api/customers", "", map[string]string{"email": "bob@example.com", "name": "Bob", "password": "short"}), http.StatusBadRequest, "short password")
	c.expectProblem(c.do("POST", "/api/customers", "", `{"name":"`+strings.Repeat("x", 2<<20)+`"}`), http.StatusRequestEntityTooLarge, "oversized body")
	c.expectProblem(c.do("POST", "/api/auth/login", "", map[string]string{"email": "bob@example.com", "password": "correct horse"}), http.StatusUnauthorized, "bad registrations wrote nothing")

	// Log in.
	c.expectProblem(c.do("POST", "/api/auth/login", "", map[string]string{"email": "ann@example.com", "password": "wrong horse"}), http.StatusUnauthorized, "wrong password")
	r = c.do("POST", "/api/auth/login", "", map[string]string{"email": "ann@example.com", "password": "correct horse"})
	if r.status != http.StatusOK {
		t.Fatalf("login: %d %s", r.status, r.body)
	}
	var tok token
	r.json(t, &tok)
	if tok.AccessToken == "" || tok.TokenType != "Bearer" || tok.ExpiresIn <= 0 {
		t.Fatalf("token %s", r.body)
	}

	// The key set that verifies tokens.
	r = c.do("GET", "/.well-known/jwks.json", "", nil)
	var jwks struct {
		Keys []struct{ Kty, Crv, Kid, Alg string } `json:"keys"`
	}
	r.json(t, &jwks)
	if r.status != 200 || len(jwks.Keys) == 0 || jwks.Keys[0].Alg != "ES256" || jwks.Keys[0].Kid == "" {
		t.Fatalf("jwks: %d %s", r.status, r.body)
	}

	// Who am I, with and without a valid token.
	me := func(tok string) response { return c.do("GET", "/api/customers/me", tok, nil) }
	r = me(tok.AccessToken)
	var who struct {
		ID    string   `json:"id"`
		Roles []string `json:"roles"`
	}
	r.json(t, &who)
	if r.status != 200 || who.ID != customer.ID {
		t.Fatalf("me: %d %s", r.status, r.body)
	}
	c.expectProblem(me(""), http.StatusUnauthorized, "missing token")
	c.expectProblem(me(tamper(t, tok.AccessToken)), http.StatusUnauthorized, "tampered token")
	// A client cannot claim another identity by sending the gateway's headers.
	r = c.do("GET", "/api/customers/me", tok.AccessToken, nil, "X-Mercato-Subject", "someone-else", "X-Mercato-Roles", "admin")
	who.ID, who.Roles = "", nil
	r.json(t, &who)
	if r.status != 200 || who.ID != customer.ID || len(who.Roles) != 1 || who.Roles[0] != "customer" {
		t.Fatalf("spoofed identity headers: %d %s", r.status, r.body)
	}

	// The admin account, with the password from the configuration.
	r = c.do("POST", "/api/auth/login", "", map[string]string{"email": "admin@mercato.local", "password": "admin password"})
	var adminTok token
	r.json(t, &adminTok)
	r = me(adminTok.AccessToken)
	if r.status != 200 || !bytes.Contains(r.body, []byte(`"admin"`)) {
		t.Fatalf("admin: %d %s", r.status, r.body)
	}

	// The catalog: integer prices in minor units.
	r = c.do("GET", "/api/products", "", nil)
	var products []struct {
		ID, SKU, Name string
		Price         struct {
			Amount   json.Number `json:"amount"`
			Currency string      `json:"currency"`
		} `json:"price"`
		Available int64 `json:"available"`
	}
	r.json(t, &products)
	if r.status != 200 || len(products) < 12 {
		t.Fatalf("products: %d, %d items", r.status, len(products))
	}
	for _, p := range products {
		if _, err := p.Price.Amount.Int64(); err != nil || p.Price.Currency != "EUR" || p.ID == "" {
			t.Fatalf("product %+v: price must be integer minor units", p)
		}
	}
	r = c.do("GET", "/api/products/"+products[0].ID, "", nil)
	if r.status != 200 || !bytes.Contains(r.body, []byte(products[0].SKU)) {
		t.Fatalf("one product: %d %s", r.status, r.body)
	}
	c.expectProblem(c.do("GET", "/api/products/01890000-0000-7000-8000-000000000000", "", nil), http.StatusNotFound, "unknown product")
	c.expectProblem(c.do("GET", "/api/products/not-an-id", "", nil), http.StatusBadRequest, "malformed product id")

	// Correlation ids: echoed when sent, generated when not, on errors too.
	r = c.do("GET", "/api/products", "", nil, "X-Correlation-ID", "e2e-corr-1")
	if got := r.header.Values("X-Correlation-ID"); len(got) != 1 || got[0] != "e2e-corr-1" {
		t.Fatalf("correlation id echoed as %v", got)
	}
	r = c.do("GET", "/api/nothing-here", "", nil)
	c.expectProblem(r, http.StatusNotFound, "unknown route")
	if r.header.Get("X-Correlation-ID") == "" {
		t.Fatal("no correlation id generated")
	}

	// Restart on the same data: customers and issued tokens survive.
	stopShop(t, s)
	stopped = true
	s2, c2 := startShop(t, data)
	t.Cleanup(func() { stopShop(t, s2) })
	r = c2.do("GET", "/api/customers/me", tok.AccessToken, nil)
	if r.status != 200 || !bytes.Contains(r.body, []byte(customer.ID)) {
		t.Fatalf("token from before the restart: %d %s", r.status, r.body)
	}
	r = c2.do("POST", "/api/auth/login", "", map[string]string{"email": "ann@example.com", "password": "correct horse"})
	if r.status != 200 {
		t.Fatalf("login after restart: %d %s", r.status, r.body)
	}
	c2.expectProblem(c2.do("POST", "/api/customers", "", ann), http.StatusConflict, "customer kept across restart")
	r = c2.do("GET", "/api/products", "", nil)
	var again []json.RawMessage
	r.json(t, &again)
	if len(again) != len(products) {
		t.Fatalf("catalog reseeded on restart: %d products, had %d", len(again), len(products))
	}
}

// tamper changes the token's subject and keeps its signature.
func tamper(t *testing.T, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	claims["sub"] = "someone-else"
	b, _ := json.Marshal(claims)
	parts[1] = base64.RawURLEncoding.EncodeToString(b)
	return strings.Join(parts, ".")
}

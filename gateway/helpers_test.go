package gateway

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"

	"github.com/mercato-shop/mercato/gateway/h1"
	"github.com/mercato-shop/mercato/platform/discovery"
	"github.com/mercato-shop/mercato/platform/runtime"
	"github.com/mercato-shop/mercato/platform/web"
)

// testRoutes is the route file of most tests: a small body limit, one route
// per auth mode, and services that are missing or refuse connections.
const testRoutes = jwtLines + `max_body_bytes: 64
routes:
  - path: /public
    methods: [GET, POST]
    service: customer
    auth: none
  - path: /private/{id}
    methods: [GET, POST]
    service: customer
    auth: jwt
  - path: /admin
    methods: [GET]
    service: customer
    auth: jwt
    roles: [admin]
  - path: /down
    methods: [GET]
    service: nowhere
    auth: none
  - path: /refused
    methods: [GET]
    service: refused
    auth: none
`

// testMaxBody is max_body_bytes of testRoutes.
const testMaxBody = 64

// received is one request as the upstream saw it.
type received struct {
	Method   string
	URI      string
	Header   http.Header
	Body     []byte
	Complete bool // the whole body arrived
}

// upstream is a service behind the gateway that records every request.
type upstream struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []received
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{}
	// Correlate, as every real service has it: it echoes the correlation id.
	u.srv = httptest.NewServer(web.Correlate(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		u.mu.Lock()
		u.reqs = append(u.reqs, received{Method: r.Method, URI: r.RequestURI, Header: r.Header.Clone(), Body: body, Complete: err == nil})
		u.mu.Unlock()
		if err != nil {
			http.Error(w, "short body", http.StatusBadRequest)
			return
		}
		fmt.Fprint(w, "from upstream")
	})))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) addr() string { return u.srv.Listener.Addr().String() }

// received returns the requests seen so far. A proxied request is recorded
// before the upstream answers, so after the client has its answer the list
// is complete.
func (u *upstream) received() []received {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.reqs)
}

func (u *upstream) wantNothing(t *testing.T) {
	t.Helper()
	if got := u.received(); len(got) > 0 {
		t.Fatalf("the upstream saw %d request(s), first %s %s", len(got), got[0].Method, got[0].URI)
	}
}

func (u *upstream) wantOne(t *testing.T) received {
	t.Helper()
	got := u.received()
	if len(got) != 1 {
		t.Fatalf("the upstream saw %d requests, want 1", len(got))
	}
	return got[0]
}

// closedAddr is an address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// serve starts the gateway for routes, wrapped in web.Correlate as
// web.Instrument does in production, and returns its URL and a client.
func serve(t *testing.T, routes string, services map[string][]string, kf jwt.Keyfunc) (string, *http.Client) {
	t.Helper()
	return startServer(t, gatewayHandler(t, routes, services, kf, nil))
}

// fixture is the gateway of testRoutes in front of one recording upstream.
type fixture struct {
	url    string
	client *http.Client
	up     *upstream
	keys   *signer
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{up: newUpstream(t), keys: newSigner(t, "k1")}
	f.url, f.client = serve(t, testRoutes, map[string][]string{
		"customer": {f.up.addr()},
		"refused":  {closedAddr(t)},
	}, f.keys.jwksKeyfunc(t))
	return f
}

// do sends req and returns the response with its body read.
func do(t *testing.T, c *http.Client, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read response of %s %s: %v", req.Method, req.URL, err)
	}
	return resp, body
}

func newRequest(t *testing.T, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// wantProblem checks that the answer is an RFC 9457 problem with status.
func wantProblem(t *testing.T, resp *http.Response, body []byte, status int) web.Problem {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d; body %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != web.ProblemContentType {
		t.Fatalf("content type %q, want %q", ct, web.ProblemContentType)
	}
	var p web.Problem
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("problem body %q: %v", body, err)
	}
	if p.Status != status || p.Title == "" {
		t.Fatalf("problem %+v, want status %d with a title", p, status)
	}
	return p
}

// signer issues access tokens as the customer service does: ES256 with a kid.
type signer struct {
	kid string
	key *ecdsa.PrivateKey
}

func newSigner(t *testing.T, kid string) *signer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &signer{kid: kid, key: key}
}

// claimsFor returns claims the gateway accepts, for sub with roles.
func claimsFor(sub string, roles ...string) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"iss":   "mercato",
		"aud":   "mercato",
		"sub":   sub,
		"roles": roles,
		"iat":   now.Unix(),
		"exp":   now.Add(time.Hour).Unix(),
	}
}

func (s *signer) sign(t *testing.T, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, c)
	tok.Header["kid"] = s.kid
	raw, err := tok.SignedString(s.key)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// jwks is the public JWK set, as the issuer publishes it.
func (s *signer) jwks(t *testing.T) []byte {
	t.Helper()
	point, err := s.key.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	set, err := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": s.kid,
		"x": enc(point[1:33]), "y": enc(point[33:]),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// jwksKeyfunc is the production keyfunc, over a static key set.
func (s *signer) jwksKeyfunc(t *testing.T) jwt.Keyfunc {
	t.Helper()
	k, err := keyfunc.NewJWKSetJSON(s.jwks(t))
	if err != nil {
		t.Fatalf("keyfunc: %v", err)
	}
	return k.Keyfunc
}

// publicPEM is the public key as anyone can fetch it.
func (s *signer) publicPEM(t *testing.T) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&s.key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// naiveKeyfunc hands out key material for whatever algorithm a token
// names, as a careless keyfunc would (the PEM for HMAC tokens). It ignores
// kid and alg on purpose: against it only the gateway's own checks stand.
func (s *signer) naiveKeyfunc(t *testing.T) jwt.Keyfunc {
	t.Helper()
	pemBytes := s.publicPEM(t)
	return func(tok *jwt.Token) (any, error) {
		if _, ok := tok.Method.(*jwt.SigningMethodHMAC); ok {
			return pemBytes, nil
		}
		return &s.key.PublicKey, nil
	}
}

// gatewayHandler is the handler serve serves, for a server of the test's
// own; self answers the routes to the gateway itself.
func gatewayHandler(t *testing.T, routes string, services map[string][]string, kf jwt.Keyfunc, self map[string]http.Handler) http.Handler {
	t.Helper()
	cfg, err := ParseConfig([]byte(routes))
	if err != nil {
		t.Fatalf("parse routes: %v", err)
	}
	// The production transport, over its fallback.
	base := h1.New(http.DefaultTransport.(*http.Transport).Clone())
	t.Cleanup(base.CloseIdleConnections)
	return web.Correlate(New(cfg, discovery.Transport(discovery.Static(services), base), kf, slog.New(slog.DiscardHandler), self))
}

// startServer serves h on the gateway's production server (NewServer, its
// timeouts included) and returns its URL and a client for it.
func startServer(t *testing.T, h http.Handler) (string, *http.Client) {
	t.Helper()
	srv := runtime.NewServer("127.0.0.1:0", NewServer(h, slog.New(slog.DiscardHandler)), slog.New(slog.DiscardHandler))
	if err := srv.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	t.Cleanup(func() {
		client.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Stop(ctx); err != nil {
			t.Errorf("stop the gateway's server: %v", err)
		}
	})
	return "http://" + srv.Addr(), client
}

// rawDo writes raw, a request as it goes on the wire, to the server at url
// and reads the answer: for requests that http.Client would not send.
func rawDo(t *testing.T, url, raw string) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Bounds a server that never answers; a served request takes milliseconds.
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatalf("write %q: %v", raw, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("answer to %q: %v", raw, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read answer to %q: %v", raw, err)
	}
	return resp, body
}

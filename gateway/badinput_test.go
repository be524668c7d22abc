package gateway

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mercato-shop/mercato/deploy"
	"github.com/mercato-shop/mercato/platform/web"
)

// Bad input at the edge: each case is refused with its exact status and
// reaches no upstream, or reaches only the upstream of the route it really
// names. The upstreams record what they receive. Elsewhere: bodies over the
// limit in TestGateway_BoundsRequestBodies, most bad tokens in
// TestAuth_RefusesWithoutAValidToken, and a remembered token past its exp in
// TestVerified_AnExpiredTokenIsRefusedEvenWhenRemembered.

// shippedGateway serves the shipped routes with one recording upstream per
// service; the one named Self answers the gateway's own admin views.
func shippedGateway(t *testing.T, keys *signer) (string, map[string]*upstream) {
	t.Helper()
	routes := deploy.GatewayRoutes()
	cfg, err := ParseConfig(routes)
	if err != nil {
		t.Fatal(err)
	}
	ups := map[string]*upstream{}
	services := map[string][]string{}
	self := map[string]http.Handler{}
	for _, r := range cfg.Routes {
		if ups[r.Service] == nil {
			ups[r.Service] = newUpstream(t)
			services[r.Service] = []string{ups[r.Service].addr()}
		}
		if r.Service == Self {
			self[r.Path] = ups[Self].srv.Config.Handler
		}
	}
	url, _ := startServer(t, gatewayHandler(t, string(routes), services, keys.jwksKeyfunc(t), self))
	return url, ups
}

func TestBadInput_PathTricksReachNoOtherRoute(t *testing.T) {
	keys := newSigner(t, "k1")
	gw, ups := shippedGateway(t, keys)
	customer := "Authorization: Bearer " + keys.sign(t, claimsFor("c-1", "customer")) + "\r\n"
	callers := []struct{ name, header string }{{"anonymous", ""}, {"customer", customer}}

	tests := []struct {
		name   string
		target string // the request-target, as sent
		method string // GET unless set
		status int
		// A redirect's Location, followed by each caller in turn.
		location   string
		wantFollow [2]int // anonymous, customer
		// The service the request reaches, and the URI it sees there.
		at, uri string
	}{
		{name: "control", target: "/api/products/42", status: http.StatusOK, at: "inventory", uri: "/api/products/42"},
		// ServeMux redirects a path with dot segments or doubled slashes to
		// its clean form; the client then asks for the admin route itself.
		{name: "dot segment", target: "/api/products/../admin/services", status: http.StatusTemporaryRedirect,
			location: "/api/admin/services", wantFollow: [2]int{404, 404}},
		{name: "dot segments", target: "/api/products/../../admin/services", status: http.StatusTemporaryRedirect,
			location: "/admin/services", wantFollow: [2]int{401, 403}},
		{name: "dot segments to chaos", target: "/api/products/../../admin/chaos/order/i-1", status: http.StatusTemporaryRedirect,
			location: "/admin/chaos/order/i-1", wantFollow: [2]int{401, 403}},
		{name: "leading double slash", target: "//admin/services", status: http.StatusTemporaryRedirect,
			location: "/admin/services", wantFollow: [2]int{401, 403}},
		{name: "redirect stays on this host", target: "///evil.example/admin", status: http.StatusTemporaryRedirect,
			location: "/evil.example/admin", wantFollow: [2]int{404, 404}},
		// Routes match the escaped path; these decode to another one.
		{name: "encoded dot segments", target: "/api/products/%2e%2e/admin/services", status: http.StatusBadRequest},
		{name: "encoded dot segments in upper case", target: "/api/products/%2E%2E/%2E%2E/admin/services", status: http.StatusBadRequest},
		{name: "encoded dot segments under /api", target: "/api/%2e%2e/admin/chaos", status: http.StatusBadRequest},
		{name: "encoded single dot", target: "/api/products/%2e", status: http.StatusBadRequest},
		{name: "encoded slashes", target: "/api/products/..%2f..%2fadmin", status: http.StatusBadRequest},
		{name: "encoded slashes to an admin view", target: "/api/products/..%2F..%2Fadmin%2Fservices", status: http.StatusBadRequest},
		{name: "encoded slash without dots", target: "/api/products/42%2fevents", status: http.StatusBadRequest},
		{name: "encoded slash in an admin route", target: "/admin/deadletters/x%2f..%2f..%2fservices", status: http.StatusBadRequest},
		// Decoded once, as every reader does, these are a product id.
		{name: "double-encoded dots", target: "/api/products/%252e%252e", status: http.StatusOK,
			at: "inventory", uri: "/api/products/%252e%252e"},
		{name: "double-encoded traversal", target: "/api/products/%252e%252e%252fadmin", status: http.StatusOK,
			at: "inventory", uri: "/api/products/%252e%252e%252fadmin"},
		{name: "double-encoded dots before admin", target: "/api/%252e%252e/admin/services", status: http.StatusNotFound},
		{name: "backslash", target: `/api/products/..\admin`, status: http.StatusBadRequest},
		{name: "backslashes to an admin view", target: `/api/products\..\..\admin\services`, status: http.StatusBadRequest},
		{name: "encoded backslash", target: "/api/products/..%5cadmin", status: http.StatusBadRequest},
		{name: "NUL", target: "/api/products/%00", status: http.StatusBadRequest},
		{name: "NUL after an admin view", target: "/admin/services%00", status: http.StatusBadRequest},
		{name: "path parameter", target: "/api/products/..;/admin/services", status: http.StatusNotFound},
		{name: "case", target: "/ADMIN/services", status: http.StatusNotFound},
		// CONNECT paths are not cleaned, and no route takes CONNECT.
		{name: "CONNECT with dot segments", method: http.MethodConnect, target: "/api/products/../admin/services", status: http.StatusNotFound},
	}
	for _, tt := range tests {
		for i, caller := range callers {
			t.Run(tt.name+"/"+caller.name, func(t *testing.T) {
				before := map[*upstream]int{}
				for _, up := range ups {
					before[up] = len(up.received())
				}
				method := tt.method
				if method == "" {
					method = http.MethodGet
				}
				// no-cache: each caller's request must reach the upstream, not
				// the catalog's cached answer to the caller before.
				resp, body := rawDo(t, gw, method+" "+tt.target+" HTTP/1.1\r\nHost: gw\r\n"+caller.header+"Cache-Control: no-cache\r\nConnection: close\r\n\r\n")
				if resp.StatusCode != tt.status {
					t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tt.status, body)
				}
				if tt.status >= 400 {
					wantProblem(t, resp, body, tt.status)
				}
				if loc := resp.Header.Get("Location"); loc != tt.location {
					t.Fatalf("Location %q, want %q", loc, tt.location)
				}
				if tt.location != "" {
					resp, body := rawDo(t, gw, "GET "+tt.location+" HTTP/1.1\r\nHost: gw\r\n"+caller.header+"Connection: close\r\n\r\n")
					wantProblem(t, resp, body, tt.wantFollow[i])
				}
				for name, up := range ups {
					got := up.received()[before[up]:]
					if name != tt.at {
						if len(got) > 0 {
							t.Fatalf("%s saw %s %s", name, got[0].Method, got[0].URI)
						}
						continue
					}
					if len(got) != 1 || got[0].URI != tt.uri {
						t.Fatalf("%s saw %d requests (%v), want one for %s", name, len(got), got, tt.uri)
					}
				}
			})
		}
	}
}

func TestBadInput_HeaderTricks(t *testing.T) {
	keys := newSigner(t, "k1")
	up, evil := newUpstream(t), newUpstream(t)
	// evil is a service discovery knows: a request forwarded by its Host
	// rather than its route would reach it.
	gw, _ := serve(t, testRoutes, map[string][]string{"customer": {up.addr()}, "evil": {evil.addr()}}, keys.jwksKeyfunc(t))
	customer := "Authorization: Bearer " + keys.sign(t, claimsFor("c-1", "customer")) + "\r\n"

	tests := []struct {
		name   string
		raw    string // the request up to its headers' end
		status int
		check  func(t *testing.T, got received) // nil: the upstream saw nothing
	}{
		// Go's server refuses control characters in a value...
		{name: "CR in a header value", raw: "GET /public HTTP/1.1\r\nHost: gw\r\nX-Note: a\rX-Mercato-Roles: admin\r\n",
			status: http.StatusBadRequest},
		{name: "NUL in a header value", raw: "GET /public HTTP/1.1\r\nHost: gw\r\nX-Note: a\x00b\r\n",
			status: http.StatusBadRequest},
		{name: "CR in a header name", raw: "GET /public HTTP/1.1\r\nHost: gw\r\nX-Note\r: a\r\n",
			status: http.StatusBadRequest},
		// ...but takes a bare LF as a line end: the smuggled line is a header
		// of its own, and the identity headers are the gateway's.
		{name: "bare LF splits a header", raw: "GET /public HTTP/1.1\r\nHost: gw\r\nX-Note: a\nX-Mercato-Roles: admin\r\n",
			status: http.StatusOK, check: func(t *testing.T, got received) {
				wantHeader(t, got.Header, "X-Note", "a")
				wantHeader(t, got.Header, web.RolesHeader, "")
			}},
		{name: "bare LF on an admin route", raw: "GET /admin HTTP/1.1\r\nHost: gw\r\n" + customer + "X-Note: a\nX-Mercato-Roles: admin\r\n",
			status: http.StatusForbidden},
		{name: "folded header line", raw: "GET /public HTTP/1.1\r\nHost: gw\r\nX-Note: a\r\n X-Mercato-Roles: admin\r\n",
			status: http.StatusOK, check: func(t *testing.T, got received) {
				wantHeader(t, got.Header, "X-Note", "a X-Mercato-Roles: admin")
				wantHeader(t, got.Header, web.RolesHeader, "")
			}},
		{name: "identity headers in lower case", raw: "GET /private/7 HTTP/1.1\r\nHost: gw\r\n" + customer +
			"x-mercato-subject: a-1\r\nx-mercato-roles: admin\r\n",
			status: http.StatusOK, check: func(t *testing.T, got received) {
				wantHeader(t, got.Header, web.SubjectHeader, "c-1")
				wantHeader(t, got.Header, web.RolesHeader, "customer")
			}},
		// Another header to Go; a reader that folds _ into - would be fooled,
		// and mercato has none.
		{name: "identity header with underscores", raw: "GET /public HTTP/1.1\r\nHost: gw\r\nX_Mercato_Roles: admin\r\n",
			status: http.StatusOK, check: func(t *testing.T, got received) {
				wantHeader(t, got.Header, web.RolesHeader, "")
				wantHeader(t, got.Header, "X_Mercato_Roles", "admin")
			}},
		{name: "client roles on an admin route", raw: "GET /admin HTTP/1.1\r\nHost: gw\r\n" + customer + "X-Mercato-Roles: admin\r\n",
			status: http.StatusForbidden},
		{name: "client identity without a token", raw: "GET /admin HTTP/1.1\r\nHost: gw\r\nX-Mercato-Subject: a-1\r\nX-Mercato-Roles: admin\r\n",
			status: http.StatusUnauthorized},
		// The proxy drops the client's forwarding headers and sets its own:
		// the upstream sees the real peer only.
		{name: "forwarding headers spoofed", raw: "GET /public HTTP/1.1\r\nHost: gw\r\nX-Forwarded-For: 203.0.113.9\r\n" +
			"Forwarded: for=203.0.113.9\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Proto: https\r\n",
			status: http.StatusOK, check: func(t *testing.T, got received) {
				wantHeader(t, got.Header, "X-Forwarded-For", "127.0.0.1")
				wantHeader(t, got.Header, "Forwarded", "")
				wantHeader(t, got.Header, "X-Forwarded-Host", "gw")
				wantHeader(t, got.Header, "X-Forwarded-Proto", "http")
			}},
		// The route picks the upstream; the host a client names only shows
		// in X-Forwarded-Host.
		{name: "absolute-form URI to another host", raw: "GET http://evil/public HTTP/1.1\r\nHost: gw\r\n",
			status: http.StatusOK, check: func(t *testing.T, got received) {
				if got.URI != "/public" {
					t.Fatalf("upstream saw %s", got.URI)
				}
				wantHeader(t, got.Header, "X-Forwarded-Host", "evil")
			}},
		{name: "Host of another service", raw: "GET /public HTTP/1.1\r\nHost: evil\r\n",
			status: http.StatusOK, check: func(t *testing.T, got received) { wantHeader(t, got.Header, "X-Forwarded-Host", "evil") }},
		{name: "absolute-form URI to another host's admin", raw: "GET http://evil/admin HTTP/1.1\r\nHost: gw\r\n",
			status: http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen, seenEvil := len(up.received()), len(evil.received())
			resp, body := rawDo(t, gw, tt.raw+"Connection: close\r\n\r\n")
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tt.status, body)
			}
			if len(evil.received()) != seenEvil {
				t.Fatal("a request reached a service no route names")
			}
			got := up.received()[seen:]
			if tt.check == nil {
				if len(got) > 0 {
					t.Fatalf("the upstream saw %s %s", got[0].Method, got[0].URI)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("the upstream saw %d requests, want 1", len(got))
			}
			tt.check(t, got[0])
		})
	}
}

// unsigned is a token with header h and claims c, and signature sig as is.
func unsigned(t *testing.T, h map[string]any, c jwt.MapClaims, sig string) string {
	t.Helper()
	part := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return part(h) + "." + part(c) + "." + sig
}

func TestBadInput_TokensAreRefused(t *testing.T) {
	// The cases of TestAuth_RefusesWithoutAValidToken are not repeated.
	tests := []struct {
		name string
		// request returns the request for the gateway at url; keys signs
		// for it, other is a key it does not know.
		request func(t *testing.T, url string, keys, other *signer) *http.Request
		// jwksOnly: the naive keyfunc ignores kid, so only the real one can
		// refuse this token.
		jwksOnly bool
	}{
		{name: "expired, beyond the leeway", request: withBearer(func(t *testing.T, keys, _ *signer) string {
			return keys.sign(t, edited(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-10 * time.Second).Unix() }))
		})},
		{name: "not valid yet, beyond the leeway", request: withBearer(func(t *testing.T, keys, _ *signer) string {
			return keys.sign(t, edited(func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(10 * time.Second).Unix() }))
		})},
		{name: "HS256 keyed with the public key's DER", request: withBearer(func(t *testing.T, keys, _ *signer) string {
			return signWith(t, jwt.SigningMethodHS256, derOf(t, keys), claimsFor("c-1", "admin"))
		})},
		{name: "HS256 keyed with the JWK set", request: withBearer(func(t *testing.T, keys, _ *signer) string {
			return signWith(t, jwt.SigningMethodHS256, keys.jwks(t), claimsFor("c-1", "admin"))
		})},
		{name: "alg None, capitalised", request: withBearer(func(t *testing.T, _, _ *signer) string {
			return unsigned(t, map[string]any{"alg": "None", "typ": "JWT", "kid": "k1"}, claimsFor("c-1", "admin"), "")
		})},
		{name: "alg none with a real signature", request: withBearer(func(t *testing.T, keys, _ *signer) string {
			real := strings.Split(keys.sign(t, claimsFor("c-1", "admin")), ".")
			return unsigned(t, map[string]any{"alg": "none", "kid": "k1"}, claimsFor("c-1", "admin"), real[2])
		})},
		{name: "kid the key set lacks, the right key", jwksOnly: true, request: withBearer(func(t *testing.T, keys, _ *signer) string {
			return (&signer{kid: "k9", key: keys.key}).sign(t, claimsFor("c-1", "customer"))
		})},
		{name: "kid the key set lacks, another key", request: withBearer(func(t *testing.T, _, other *signer) string {
			return (&signer{kid: "k9", key: other.key}).sign(t, claimsFor("c-1", "customer"))
		})},
		{name: "no kid, another key", request: withBearer(func(t *testing.T, _, other *signer) string {
			raw, err := jwt.NewWithClaims(jwt.SigningMethodES256, claimsFor("c-1", "customer")).SignedString(other.key)
			if err != nil {
				t.Fatal(err)
			}
			return raw
		})},
		{name: "two segments", request: withBearer(func(t *testing.T, keys, _ *signer) string {
			real := strings.Split(keys.sign(t, claimsFor("c-1", "customer")), ".")
			return real[0] + "." + real[1]
		})},
		{name: "four segments", request: withBearer(func(t *testing.T, keys, _ *signer) string {
			return keys.sign(t, claimsFor("c-1", "customer")) + ".x"
		})},
		{name: "signature stripped", request: withBearer(func(t *testing.T, keys, _ *signer) string {
			real := strings.Split(keys.sign(t, claimsFor("c-1", "customer")), ".")
			return real[0] + "." + real[1] + "."
		})},
		{name: "header not base64", request: withBearer(func(t *testing.T, keys, _ *signer) string {
			real := strings.Split(keys.sign(t, claimsFor("c-1", "customer")), ".")
			return "!!." + real[1] + "." + real[2]
		})},
		{name: "header not an object", request: withBearer(func(t *testing.T, keys, _ *signer) string {
			real := strings.Split(keys.sign(t, claimsFor("c-1", "customer")), ".")
			return base64.RawURLEncoding.EncodeToString([]byte(`["ES256"]`)) + "." + real[1] + "." + real[2]
		})},
		// Tokens go in the Authorization header only.
		{name: "token in the query", request: func(t *testing.T, url string, keys, _ *signer) *http.Request {
			return newRequest(t, http.MethodGet, url+"/private/7?access_token="+keys.sign(t, claimsFor("c-1", "customer")), nil)
		}},
		{name: "token in a cookie", request: func(t *testing.T, url string, keys, _ *signer) *http.Request {
			req := newRequest(t, http.MethodGet, url+"/private/7", nil)
			req.AddCookie(&http.Cookie{Name: "access_token", Value: keys.sign(t, claimsFor("c-1", "customer"))})
			return req
		}},
	}
	keyfuncs := []struct {
		name string
		kf   func(*signer, *testing.T) jwt.Keyfunc
	}{
		{"jwks keyfunc", (*signer).jwksKeyfunc},
		{"naive keyfunc", (*signer).naiveKeyfunc},
	}
	for _, k := range keyfuncs {
		for _, tt := range tests {
			if tt.jwksOnly && k.name != "jwks keyfunc" {
				continue
			}
			t.Run(k.name+"/"+tt.name, func(t *testing.T) {
				keys, other := newSigner(t, "k1"), newSigner(t, "k2")
				up := newUpstream(t)
				url, client := serve(t, testRoutes, map[string][]string{"customer": {up.addr()}}, k.kf(keys, t))

				resp, body := do(t, client, tt.request(t, url, keys, other))

				wantProblem(t, resp, body, http.StatusUnauthorized)
				if h := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(h, "Bearer") {
					t.Fatalf("WWW-Authenticate %q, want a Bearer challenge", h)
				}
				up.wantNothing(t)
			})
		}
	}
}

// withBearer sends GET /private/7 with the token of raw.
func withBearer(raw func(t *testing.T, keys, other *signer) string) func(*testing.T, string, *signer, *signer) *http.Request {
	return func(t *testing.T, url string, keys, other *signer) *http.Request {
		req := newRequest(t, http.MethodGet, url+"/private/7", nil)
		req.Header.Set("Authorization", "Bearer "+raw(t, keys, other))
		return req
	}
}

// derOf is the public key of s in DER, as anyone can fetch it.
func derOf(t *testing.T, s *signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&s.key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestBadInput_SlowHeadersLoseTheConnection(t *testing.T) {
	up := newUpstream(t)
	keys := newSigner(t, "k1")
	// The production server, timeouts included (ReadHeaderTimeout is 5s).
	gw, _ := startServer(t, gatewayHandler(t, testRoutes, map[string][]string{"customer": {up.addr()}}, keys.jwksKeyfunc(t), nil))
	head := "GET /public HTTP/1.1\r\nHost: gw\r\nX-Slow: " + strings.Repeat("a", 150) + "\r\n\r\n"

	// Sent at once, the request is served.
	if resp, body := rawDo(t, gw, head); resp.StatusCode != http.StatusOK {
		t.Fatalf("control: status %d, body %s", resp.StatusCode, body)
	}
	before := len(up.received())

	conn, err := net.Dial("tcp", strings.TrimPrefix(gw, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// One byte per 100ms: the headers would end after 15s, long past the
	// server's ReadHeaderTimeout.
	var sentAll atomic.Bool
	stop := make(chan struct{})
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := range len(head) {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := conn.Write([]byte{head[i]}); err != nil {
				return
			}
		}
		sentAll.Store(true)
	}()
	defer func() { close(stop); <-wrote }()

	// Bounds a server that never closes; it should within 5s.
	if err := conn.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server kept the slow connection open")
	}
	// EOF (nil) or a reset, if bytes were still arriving when it closed.
	if n != 0 {
		t.Fatalf("the server answered %d bytes to headers that never ended", n)
	}
	if sentAll.Load() {
		t.Fatal("the headers were all sent before the server closed the connection")
	}
	if got := up.received()[before:]; len(got) > 0 {
		t.Fatalf("the upstream saw %s %s", got[0].Method, got[0].URI)
	}
}

package gateway

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mercato-shop/mercato/platform/web"
)

// tamper edits a signed token's claims and keeps its signature.
func tamper(t *testing.T, raw string, edit func(jwt.MapClaims)) string {
	t.Helper()
	parts := strings.Split(raw, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c jwt.MapClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		t.Fatal(err)
	}
	edit(c)
	if payload, err = json.Marshal(c); err != nil {
		t.Fatal(err)
	}
	parts[1] = base64.RawURLEncoding.EncodeToString(payload)
	return strings.Join(parts, ".")
}

// signWith signs c with method and key, under kid k1.
func signWith(t *testing.T, method jwt.SigningMethod, key any, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, c)
	tok.Header["kid"] = "k1"
	raw, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func edited(edit func(jwt.MapClaims)) jwt.MapClaims {
	c := claimsFor("c-1", "customer")
	edit(c)
	return c
}

func TestAuth_RefusesWithoutAValidToken(t *testing.T) {
	hour := time.Hour
	tests := []struct {
		name string
		// authorization returns the Authorization header; keys signs for the
		// gateway, other is a key the gateway does not know.
		authorization func(t *testing.T, keys, other *signer) string
	}{
		{"no header", func(*testing.T, *signer, *signer) string { return "" }},
		{"basic scheme", func(*testing.T, *signer, *signer) string { return "Basic dXNlcjpwYXNz" }},
		{"bearer without token", func(*testing.T, *signer, *signer) string { return "Bearer" }},
		{"garbage token", func(*testing.T, *signer, *signer) string { return "Bearer not-a.jwt.at-all" }},
		{"valid token without scheme", func(t *testing.T, keys, _ *signer) string {
			return keys.sign(t, claimsFor("c-1", "customer"))
		}},
		{"tampered payload", func(t *testing.T, keys, _ *signer) string {
			return "Bearer " + tamper(t, keys.sign(t, claimsFor("c-1", "customer")), func(c jwt.MapClaims) {
				c["sub"] = "c-2"
				c["roles"] = []string{"admin"}
			})
		}},
		{"signed by another key", func(t *testing.T, _, other *signer) string {
			return "Bearer " + other.sign(t, claimsFor("c-1", "customer"))
		}},
		{"expired", func(t *testing.T, keys, _ *signer) string {
			return "Bearer " + keys.sign(t, edited(func(c jwt.MapClaims) {
				c["iat"] = time.Now().Add(-2 * hour).Unix()
				c["exp"] = time.Now().Add(-hour).Unix()
			}))
		}},
		{"not yet valid", func(t *testing.T, keys, _ *signer) string {
			return "Bearer " + keys.sign(t, edited(func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(hour).Unix() }))
		}},
		{"issued in the future", func(t *testing.T, keys, _ *signer) string {
			return "Bearer " + keys.sign(t, edited(func(c jwt.MapClaims) { c["iat"] = time.Now().Add(hour).Unix() }))
		}},
		{"wrong audience", func(t *testing.T, keys, _ *signer) string {
			return "Bearer " + keys.sign(t, edited(func(c jwt.MapClaims) { c["aud"] = "elsewhere" }))
		}},
		{"no audience", func(t *testing.T, keys, _ *signer) string {
			return "Bearer " + keys.sign(t, edited(func(c jwt.MapClaims) { delete(c, "aud") }))
		}},
		{"wrong issuer", func(t *testing.T, keys, _ *signer) string {
			return "Bearer " + keys.sign(t, edited(func(c jwt.MapClaims) { c["iss"] = "elsewhere" }))
		}},
		{"no issuer", func(t *testing.T, keys, _ *signer) string {
			return "Bearer " + keys.sign(t, edited(func(c jwt.MapClaims) { delete(c, "iss") }))
		}},
		{"no exp", func(t *testing.T, keys, _ *signer) string {
			return "Bearer " + keys.sign(t, edited(func(c jwt.MapClaims) { delete(c, "exp") }))
		}},
		{"no subject", func(t *testing.T, keys, _ *signer) string {
			return "Bearer " + keys.sign(t, edited(func(c jwt.MapClaims) { delete(c, "sub") }))
		}},
		{"role that would split the roles header", func(t *testing.T, keys, _ *signer) string {
			return "Bearer " + keys.sign(t, edited(func(c jwt.MapClaims) { c["roles"] = []string{"customer,admin"} }))
		}},
		{"alg none", func(t *testing.T, _, _ *signer) string {
			return "Bearer " + signWith(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claimsFor("c-1", "admin"))
		}},
		{"HS256 keyed with the public key", func(t *testing.T, keys, _ *signer) string {
			return "Bearer " + signWith(t, jwt.SigningMethodHS256, keys.publicPEM(t), claimsFor("c-1", "admin"))
		}},
	}
	// The production keyfunc refuses some of these tokens itself; the naive
	// one does not, so the gateway's own checks are tested too.
	keyfuncs := []struct {
		name string
		kf   func(*signer, *testing.T) jwt.Keyfunc
	}{
		{"jwks keyfunc", (*signer).jwksKeyfunc},
		{"naive keyfunc", (*signer).naiveKeyfunc},
	}
	for _, k := range keyfuncs {
		for _, tt := range tests {
			t.Run(k.name+"/"+tt.name, func(t *testing.T) {
				keys, other := newSigner(t, "k1"), newSigner(t, "k1")
				up := newUpstream(t)
				url, client := serve(t, testRoutes, map[string][]string{"customer": {up.addr()}}, k.kf(keys, t))

				req := newRequest(t, http.MethodGet, url+"/private/7", nil)
				if h := tt.authorization(t, keys, other); h != "" {
					req.Header.Set("Authorization", h)
				}
				resp, body := do(t, client, req)

				wantProblem(t, resp, body, http.StatusUnauthorized)
				if h := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(h, "Bearer") {
					t.Fatalf("WWW-Authenticate %q, want a Bearer challenge", h)
				}
				up.wantNothing(t)
			})
		}
	}
}

func TestAuth_ValidTokenReachesUpstreamWithIdentity(t *testing.T) {
	tests := []struct {
		name      string
		scheme    string
		roles     []string
		wantRoles string
	}{
		{name: "one role", scheme: "Bearer", roles: []string{"customer"}, wantRoles: "customer"},
		{name: "two roles", scheme: "Bearer", roles: []string{"customer", "admin"}, wantRoles: "customer,admin"},
		{name: "scheme in lower case", scheme: "bearer", roles: []string{"customer"}, wantRoles: "customer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			req := newRequest(t, http.MethodPost, f.url+"/private/7?x=1", strings.NewReader(`{"a":1}`))
			req.Header.Set("Authorization", tt.scheme+" "+f.keys.sign(t, claimsFor("c-1", tt.roles...)))
			resp, body := do(t, f.client, req)

			if resp.StatusCode != http.StatusOK || string(body) != "from upstream" {
				t.Fatalf("status %d, body %s", resp.StatusCode, body)
			}
			got := f.up.wantOne(t)
			if got.Method != http.MethodPost || got.URI != "/private/7?x=1" || string(got.Body) != `{"a":1}` {
				t.Fatalf("upstream saw %s %s %q", got.Method, got.URI, got.Body)
			}
			wantHeader(t, got.Header, web.SubjectHeader, "c-1")
			wantHeader(t, got.Header, web.RolesHeader, tt.wantRoles)
		})
	}
}

// wantHeader checks that h holds exactly one value for name, want; want ""
// means none.
func wantHeader(t *testing.T, h http.Header, name, want string) {
	t.Helper()
	got := h.Values(name)
	if want == "" {
		if slices.ContainsFunc(got, func(v string) bool { return v != "" }) {
			t.Fatalf("upstream got %s %q, want none", name, got)
		}
		return
	}
	if len(got) != 1 || got[0] != want {
		t.Fatalf("upstream got %s %q, want [%q]", name, got, want)
	}
}

func TestGateway_ClientIdentityHeadersNeverPass(t *testing.T) {
	tests := []struct {
		name        string
		path        string
		token       bool   // send a valid customer token for c-1
		connection  string // a Connection header naming the identity headers hop-by-hop
		wantSubject string
		wantRoles   string
	}{
		{name: "public route", path: "/public"},
		{name: "public route, hop-by-hop", path: "/public", connection: "X-Mercato-Subject, X-Mercato-Roles"},
		{name: "jwt route", path: "/private/7", token: true, wantSubject: "c-1", wantRoles: "customer"},
		{name: "jwt route, hop-by-hop", path: "/private/7", token: true, connection: "X-Mercato-Subject, X-Mercato-Roles",
			wantSubject: "c-1", wantRoles: "customer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			req := newRequest(t, http.MethodGet, f.url+tt.path, nil)
			req.Header.Add(web.SubjectHeader, "admin-1")
			req.Header.Add(web.SubjectHeader, "admin-2")
			req.Header.Set(web.RolesHeader, "admin")
			if tt.connection != "" {
				req.Header.Set("Connection", tt.connection)
			}
			if tt.token {
				req.Header.Set("Authorization", "Bearer "+f.keys.sign(t, claimsFor("c-1", "customer")))
			}
			resp, body := do(t, f.client, req)

			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, body %s", resp.StatusCode, body)
			}
			got := f.up.wantOne(t)
			wantHeader(t, got.Header, web.SubjectHeader, tt.wantSubject)
			wantHeader(t, got.Header, web.RolesHeader, tt.wantRoles)
		})
	}
}

func TestAuth_RolesGuardRoute(t *testing.T) {
	tests := []struct {
		name       string
		roles      []string
		wantStatus int
	}{
		{name: "customer", roles: []string{"customer"}, wantStatus: http.StatusForbidden},
		{name: "no roles", wantStatus: http.StatusForbidden},
		{name: "role named like admin", roles: []string{"Admin", "admins"}, wantStatus: http.StatusForbidden},
		{name: "admin", roles: []string{"admin"}, wantStatus: http.StatusOK},
		{name: "customer and admin", roles: []string{"customer", "admin"}, wantStatus: http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			req := newRequest(t, http.MethodGet, f.url+"/admin", nil)
			req.Header.Set("Authorization", "Bearer "+f.keys.sign(t, claimsFor("u-1", tt.roles...)))
			resp, body := do(t, f.client, req)

			if tt.wantStatus != http.StatusOK {
				wantProblem(t, resp, body, tt.wantStatus)
				f.up.wantNothing(t)
				return
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, body %s", resp.StatusCode, body)
			}
			wantHeader(t, f.up.wantOne(t).Header, web.SubjectHeader, "u-1")
		})
	}
}

package gateway

import (
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/mercato-shop/mercato/deploy"
)

func TestParseConfig_ShippedRoutes(t *testing.T) {
	cfg, err := ParseConfig(deploy.GatewayRoutes())
	if err != nil {
		t.Fatalf("deploy/gateway/routes.yaml: %v", err)
	}
	if cfg.JWT.Issuer != "mercato" || cfg.JWT.Audience != "mercato" || cfg.JWT.JWKS == "" {
		t.Fatalf("jwt %+v", cfg.JWT)
	}
	if cfg.MaxBodyBytes != 1<<20 {
		t.Fatalf("max_body_bytes %d", cfg.MaxBodyBytes)
	}
	i := slices.IndexFunc(cfg.Routes, func(r Route) bool { return r.Path == "/api/customers/me" })
	if i < 0 || cfg.Routes[i].Auth != AuthJWT {
		t.Fatalf("/api/customers/me must need a token; routes %+v", cfg.Routes)
	}
	// Only the server-sent event stream is long-lived.
	for _, r := range cfg.Routes {
		if r.Stream != (r.Path == "/api/orders/{id}/updates") {
			t.Errorf("route %s: stream %v", r.Path, r.Stream)
		}
	}
}

func TestParseConfig_Defaults(t *testing.T) {
	cfg, err := ParseConfig([]byte(`jwt: {issuer: mercato, audience: mercato, jwks: "http://customer/jwks"}
routes:
  - path: /a
    methods: [get, Post]
    service: customer
`))
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Routes[0]
	if r.Auth != AuthJWT {
		t.Fatalf("auth %q: a route that says nothing must need a token", r.Auth)
	}
	if !slices.Equal(r.Methods, []string{"GET", "POST"}) {
		t.Fatalf("methods %q", r.Methods)
	}
	if cfg.MaxBodyBytes != 1<<20 {
		t.Fatalf("max_body_bytes %d", cfg.MaxBodyBytes)
	}
}

// Route files for the error cases, and the jwt section of every test's:
// jwtLines is lines 1-4, firstRoute lines
// 6-9, so a second route starts at line 10.
const (
	jwtLines   = "jwt:\n  issuer: mercato\n  audience: mercato\n  jwks: http://customer/.well-known/jwks.json\n"
	firstRoute = "  - path: /a\n    methods: [GET]\n    service: customer\n    auth: none\n"
	validHead  = jwtLines + "routes:\n" + firstRoute
)

type configCase struct {
	name     string
	yaml     string
	wantLine int    // 0: no line to name
	wantText string // the error names the culprit
}

func configErrorCases() []configCase {
	return []configCase{
		{"unknown top-level key", jwtLines + "max_body: 10\nroutes:\n" + firstRoute, 5, "max_body"},
		{"unknown jwt key", "jwt:\n  issuer: mercato\n  audience: mercato\n  audiance: mercato\n  jwks: http://customer/jwks\nroutes:\n" + firstRoute, 4, "audiance"},
		{"unknown route key", validHead + "  - path: /b\n    methods: [GET]\n    service: customer\n    rolse: [admin]\n", 13, "rolse"},
		{"missing service", validHead + "  - path: /b\n    methods: [GET]\n    auth: none\n", 10, "service"},
		{"bad service name", validHead + "  - path: /b\n    methods: [GET]\n    service: http://customer\n", 10, "service"},
		{"bad auth value", validHead + "  - path: /b\n    methods: [GET]\n    service: customer\n    auth: basic\n", 10, "auth"},
		{"duplicate method and path", validHead + "  - path: /a\n    methods: [post, get]\n    service: customer\n", 10, "GET /a is already routed at line 6"},
		{"roles without jwt", validHead + "  - path: /b\n    methods: [GET]\n    service: customer\n    auth: none\n    roles: [admin]\n", 10, "roles"},
		{"no methods", validHead + "  - path: /b\n    service: customer\n", 10, "methods"},
		{"empty methods", validHead + "  - path: /b\n    methods: []\n    service: customer\n", 10, "methods"},
		{"unsupported method", validHead + "  - path: /b\n    methods: [TRACE]\n    service: customer\n", 10, "TRACE"},
		{"relative path", validHead + "  - path: b\n    methods: [GET]\n    service: customer\n", 10, "path"},
		{"methods not a list", validHead + "  - path: /b\n    methods: GET\n    service: customer\n", 11, "[]string"},
		{"route not a mapping", validHead + "  - /b\n", 10, "Route"},
		{"no jwt section", "routes:\n" + firstRoute, 0, "jwt"},
		{"no routes", jwtLines + "routes: []\n", 0, "no routes"},
		{"empty file", "", 0, ""},
	}
}

func TestParseConfig_ErrorsNameTheirLine(t *testing.T) {
	for _, tt := range configErrorCases() {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("accepted:\n%s", tt.yaml)
			}
			if tt.wantLine > 0 && !regexp.MustCompile(fmt.Sprintf(`\bline %d\b`, tt.wantLine)).MatchString(err.Error()) {
				t.Fatalf("error %q does not name line %d", err, tt.wantLine)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Fatalf("error %q does not say %q", err, tt.wantText)
			}
		})
	}
}

// The gateway registers each path as a net/http pattern, and ServeMux
// panics on a pattern it cannot parse or that conflicts with another, so
// ParseConfig must refuse those paths.
func TestParseConfig_RefusesPathsTheGatewayCannotServe(t *testing.T) {
	tests := []struct {
		name     string
		routes   string
		wantLine int
	}{
		{"unclosed wildcard", "  - path: /b/{id\n    methods: [GET]\n    service: customer\n", 10},
		{"same pattern, other wildcard name", "  - path: /a/{x}\n    methods: [GET]\n    service: customer\n" +
			"  - path: /a/{y}\n    methods: [POST]\n    service: customer\n", 13},
		{"the gateway's own catch-all", "  - path: /\n    methods: [GET]\n    service: customer\n", 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(validHead + tt.routes))
			if err == nil {
				t.Fatalf("accepted; New then panics: %v", newPanic(cfg))
			}
			if !regexp.MustCompile(fmt.Sprintf(`\bline %d\b`, tt.wantLine)).MatchString(err.Error()) {
				t.Fatalf("error %q does not name line %d", err, tt.wantLine)
			}
		})
	}
}

// newPanic builds a gateway for cfg and returns what New panicked with.
func newPanic(cfg Config) (v any) {
	defer func() { v = recover() }()
	New(cfg, http.DefaultTransport, nil, slog.New(slog.DiscardHandler))
	return nil
}

// FuzzParseConfig checks that ParseConfig never panics, and that whatever it
// accepts is valid and can be served. Seeds: testdata/fuzz/FuzzParseConfig
// and the files of the tests above.
func FuzzParseConfig(f *testing.F) {
	f.Add(deploy.GatewayRoutes())
	f.Add([]byte(testRoutes))
	for _, c := range configErrorCases() {
		f.Add([]byte(c.yaml))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			return
		}
		if len(cfg.Routes) == 0 || cfg.MaxBodyBytes <= 0 {
			t.Fatalf("accepted %d routes, max body %d", len(cfg.Routes), cfg.MaxBodyBytes)
		}
		for _, r := range cfg.Routes {
			if (r.Auth != AuthNone && r.Auth != AuthJWT) || len(r.Methods) == 0 || !serviceName.MatchString(r.Service) {
				t.Fatalf("accepted route %+v", r)
			}
		}
		if v := newPanic(cfg); v != nil {
			t.Fatalf("ParseConfig accepted %q but New panics: %v", data, v)
		}
	})
}

func TestParseConfig_RefusesAKeySetThatIsNotAURL(t *testing.T) {
	for _, jwks := range []string{"0", "customer/.well-known/jwks.json", "ftp://customer/jwks", "http://"} {
		cfg := "jwt: {issuer: mercato, audience: mercato, jwks: \"" + jwks + "\"}\nroutes:\n  - {path: /a, methods: [GET], service: a, auth: none}\n"
		if _, err := ParseConfig([]byte(cfg)); err == nil || !strings.Contains(err.Error(), "jwks") {
			t.Errorf("jwks %q: %v", jwks, err)
		}
	}
}

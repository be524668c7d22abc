package adapters_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/platform/storage/storagetest"
	"github.com/mercato-shop/mercato/services/customer/adapters"
	"github.com/mercato-shop/mercato/services/customer/app"
	"github.com/mercato-shop/mercato/services/customer/domain"
	"github.com/mercato-shop/mercato/services/customer/migrations"
)

const (
	reportingSecret = "5f2b9c0e7d1a4b3c8e6f0a9d2c4b7e1f5a3d8c6b0e9f2a7d4c1b8e5f3a6d9c0b"
	partnerSecret   = "partner-secret-0123456789abcdef0123456789"
)

var clientSpecs = []app.ClientSpec{
	{ID: "reporting", Secret: reportingSecret, Name: "Nightly report", Scopes: []string{"orders:read", "stats:read"}, Roles: []string{"admin"}},
	{ID: "partner", Secret: partnerSecret, Name: "Partner", Scopes: []string{"catalog:read"}},
}

// tokenServer serves the customer HTTP endpoints with the client
// credentials grant on db, with the clients of clientSpecs.
func tokenServer(t *testing.T, db *storage.DB) string {
	t.Helper()
	ctx := context.Background()
	signer, err := adapters.NewSigner(ctx, db, adapters.TokenConfig{Issuer: "mercato", Audience: "mercato", TTL: 15 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	clients := adapters.NewClients(db)
	if err := app.EnsureClients(ctx, clients, clientSpecs); err != nil {
		t.Fatal(err)
	}
	jwks, err := signer.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	(&adapters.HTTP{
		ClientToken: app.NewClientTokenHandler(clients, signer),
		JWKS:        jwks,
		Logger:      slog.New(slog.DiscardHandler),
	}).Routes(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

type tokenCall struct {
	method      string
	contentType string // form-urlencoded unless set
	query       string
	basic       [2]string // id, secret; none when id is ""
	auth        string    // a raw Authorization header
	form        string
}

type tokenAnswer struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (c tokenCall) do(t *testing.T, base string) tokenAnswer {
	t.Helper()
	method := c.method
	if method == "" {
		method = http.MethodPost
	}
	u := base + "/oauth/token"
	if c.query != "" {
		u += "?" + c.query
	}
	req, err := http.NewRequest(method, u, strings.NewReader(c.form))
	if err != nil {
		t.Fatal(err)
	}
	ct := c.contentType
	if ct == "" {
		ct = "application/x-www-form-urlencoded"
	}
	req.Header.Set("Content-Type", ct)
	if c.basic[0] != "" {
		req.SetBasicAuth(url.QueryEscape(c.basic[0]), url.QueryEscape(c.basic[1]))
	}
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := tokenAnswer{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if err := json.Unmarshal(raw, &a.body); err != nil {
		t.Fatalf("%s /oauth/token: %d %q is not a JSON object: %v", method, resp.StatusCode, raw, err)
	}
	if resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("Pragma") != "no-cache" {
		t.Fatalf("Cache-Control %q, Pragma %q: want no-store, no-cache", resp.Header.Get("Cache-Control"), resp.Header.Get("Pragma"))
	}
	if mt := resp.Header.Get("Content-Type"); !strings.HasPrefix(mt, "application/json") {
		t.Fatalf("Content-Type %q, want application/json (RFC 6749, not problem+json)", mt)
	}
	return a
}

// verifyClientToken checks tok as the gateway does, against the key set the
// service publishes, and returns its claims.
func verifyClientToken(t *testing.T, base, tok string) adapters.ClientClaims {
	t.Helper()
	resp, err := http.Get(base + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	set, _ := io.ReadAll(resp.Body)
	kf, err := keyfunc.NewJWKSetJSON(set)
	if err != nil {
		t.Fatal(err)
	}
	var claims adapters.ClientClaims
	_, err = jwt.ParseWithClaims(tok, &claims, kf.Keyfunc, jwt.WithValidMethods([]string{"ES256"}),
		jwt.WithIssuer("mercato"), jwt.WithAudience("mercato"), jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	if err != nil {
		t.Fatalf("the token does not verify with the published key set: %v", err)
	}
	return claims
}

func TestTokenEndpoint_IssuesClientCredentialsTokens(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		base := tokenServer(t, db)

		t.Run("HTTP Basic, all of the client's scopes", func(t *testing.T) {
			a := tokenCall{basic: [2]string{"reporting", reportingSecret}, form: "grant_type=client_credentials"}.do(t, base)
			if a.status != http.StatusOK {
				t.Fatalf("%d %s", a.status, a.raw)
			}
			if a.body["token_type"] != "Bearer" || a.body["expires_in"] != float64(900) || a.body["scope"] != "orders:read stats:read" {
				t.Fatalf("answer %s", a.raw)
			}
			c := verifyClientToken(t, base, a.body["access_token"].(string))
			if c.Subject != "client:reporting" || c.ClientID != "reporting" || c.Scope != "orders:read stats:read" ||
				!slices.Equal(c.Roles, []string{"admin"}) || c.Issuer != "mercato" || !slices.Equal(c.Audience, jwt.ClaimStrings{"mercato"}) {
				t.Fatalf("claims %+v", c)
			}
			if life := c.ExpiresAt.Sub(c.IssuedAt.Time); life != 15*time.Minute {
				t.Fatalf("the token lives %v, want 15m", life)
			}
			if id, err := uuid.Parse(c.ID); err != nil || id.Version() != 7 {
				t.Fatalf("jti %q is not a UUIDv7", c.ID)
			}
		})

		t.Run("form credentials, a subset of the scopes", func(t *testing.T) {
			a := tokenCall{form: url.Values{
				"grant_type": {"client_credentials"}, "client_id": {"reporting"}, "client_secret": {reportingSecret}, "scope": {"stats:read"},
			}.Encode()}.do(t, base)
			if a.status != http.StatusOK || a.body["scope"] != "stats:read" {
				t.Fatalf("%d %s", a.status, a.raw)
			}
			c := verifyClientToken(t, base, a.body["access_token"].(string))
			if c.Subject != "client:reporting" || c.Scope != "stats:read" || !slices.Equal(c.Roles, []string{"admin"}) {
				t.Fatalf("claims %+v", c)
			}
		})

		t.Run("a client without roles gets an empty roles claim", func(t *testing.T) {
			a := tokenCall{basic: [2]string{"partner", partnerSecret}, form: "grant_type=client_credentials&scope=catalog:read"}.do(t, base)
			if a.status != http.StatusOK {
				t.Fatalf("%d %s", a.status, a.raw)
			}
			c := verifyClientToken(t, base, a.body["access_token"].(string))
			if c.Subject != "client:partner" || c.Scope != "catalog:read" || c.Roles == nil || len(c.Roles) != 0 {
				t.Fatalf("claims %+v", c)
			}
		})
	})
}

func TestTokenEndpoint_AnswersRFC6749Errors(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		base := tokenServer(t, db)
		ok := [2]string{"reporting", reportingSecret}
		grant := "grant_type=client_credentials"
		tests := []struct {
			name       string
			call       tokenCall
			wantStatus int
			wantError  string
		}{
			{"wrong secret, Basic", tokenCall{basic: [2]string{"reporting", partnerSecret}, form: grant}, 401, "invalid_client"},
			{"wrong secret, form", tokenCall{form: grant + "&client_id=reporting&client_secret=" + partnerSecret}, 400, "invalid_client"},
			{"unknown client, Basic", tokenCall{basic: [2]string{"nobody", reportingSecret}, form: grant}, 401, "invalid_client"},
			{"unknown client, form", tokenCall{form: grant + "&client_id=nobody&client_secret=" + reportingSecret}, 400, "invalid_client"},
			{"no credentials", tokenCall{form: grant}, 400, "invalid_client"},
			{"client_id without a secret", tokenCall{form: grant + "&client_id=reporting"}, 400, "invalid_client"},
			{"a Bearer token instead of Basic", tokenCall{auth: "Bearer abc", form: grant}, 401, "invalid_client"},
			{"missing grant_type", tokenCall{basic: ok, form: "scope=stats:read"}, 400, "invalid_request"},
			{"empty grant_type", tokenCall{basic: ok, form: "grant_type="}, 400, "invalid_request"},
			{"grant_type=password", tokenCall{basic: ok, form: "grant_type=password&username=ann&password=x"}, 400, "unsupported_grant_type"},
			{"a scope outside the client's", tokenCall{basic: ok, form: grant + "&scope=stats:read+catalog:read"}, 400, "invalid_scope"},
			{"a malformed scope", tokenCall{basic: ok, form: grant + "&scope=" + url.QueryEscape(`a"b`)}, 400, "invalid_scope"},
			{"Basic and form credentials at once", tokenCall{basic: ok, form: grant + "&client_id=reporting&client_secret=" + reportingSecret}, 400, "invalid_request"},
			{"Basic and another client_id in the form", tokenCall{basic: ok, form: grant + "&client_id=partner"}, 400, "invalid_request"},
			{"a repeated parameter", tokenCall{basic: ok, form: grant + "&" + grant}, 400, "invalid_request"},
			{"a JSON body", tokenCall{basic: ok, contentType: "application/json", form: `{"grant_type":"client_credentials"}`}, 400, "invalid_request"},
			{"credentials in the URL", tokenCall{query: "client_id=reporting&client_secret=" + reportingSecret, form: grant}, 400, "invalid_request"},
			{"GET", tokenCall{method: http.MethodGet, basic: ok}, 405, "invalid_request"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				a := tt.call.do(t, base)
				if a.status != tt.wantStatus || a.body["error"] != tt.wantError {
					t.Fatalf("%d %s, want %d with error %q", a.status, a.raw, tt.wantStatus, tt.wantError)
				}
				if _, ok := a.body["access_token"]; ok {
					t.Fatalf("an error with a token: %s", a.raw)
				}
				if d, _ := a.body["error_description"].(string); d == "" {
					t.Fatalf("no error_description: %s", a.raw)
				}
				challenge := a.header.Get("WWW-Authenticate")
				if tt.wantStatus == 401 && challenge != `Basic realm="mercato"` {
					t.Fatalf("401 with WWW-Authenticate %q, want a Basic challenge", challenge)
				}
				if tt.wantStatus != 401 && challenge != "" {
					t.Fatalf("%d with WWW-Authenticate %q", a.status, challenge)
				}
				if tt.wantStatus == 405 && a.header.Get("Allow") != http.MethodPost {
					t.Fatalf("405 with Allow %q", a.header.Get("Allow"))
				}
				for _, s := range []string{reportingSecret, partnerSecret} {
					if strings.Contains(a.raw, s) {
						t.Fatalf("the answer shows a secret: %s", a.raw)
					}
				}
			})
		}
	})
}

// Clients are seeded from the configuration on every start: a changed
// secret replaces the old one, and only the secret's hash is stored.
func TestEnsureClients_ReplacesTheSecretAndStoresOnlyItsHash(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		clients := adapters.NewClients(db)
		if err := app.EnsureClients(ctx, clients, clientSpecs); err != nil {
			t.Fatal(err)
		}
		first, err := clients.ClientByID(ctx, "reporting")
		if err != nil {
			t.Fatal(err)
		}
		if first.Name() != "Nightly report" || !slices.Equal(first.Scopes(), []string{"orders:read", "stats:read"}) ||
			!slices.Equal(first.Roles(), []string{"admin"}) || !first.VerifySecret(reportingSecret) {
			t.Fatalf("stored client %+v", first)
		}
		partner, err := clients.ClientByID(ctx, "partner")
		if err != nil || partner.Roles() != nil {
			t.Fatalf("partner %+v %v: want no roles", partner, err)
		}

		rotated := slices.Clone(clientSpecs)
		rotated[0].Secret = strings.Repeat("7", 40)
		rotated[0].Scopes = []string{"stats:read"}
		if err := app.EnsureClients(ctx, clients, rotated); err != nil {
			t.Fatal(err)
		}
		got, err := clients.ClientByID(ctx, "reporting")
		if err != nil {
			t.Fatal(err)
		}
		if got.VerifySecret(reportingSecret) || !got.VerifySecret(rotated[0].Secret) {
			t.Fatal("the old secret still verifies, or the new one does not")
		}
		if !slices.Equal(got.Scopes(), []string{"stats:read"}) || !got.CreatedAt().Equal(first.CreatedAt()) {
			t.Fatalf("after the restart: scopes %v created %v, want [stats:read] and %v", got.Scopes(), got.CreatedAt(), first.CreatedAt())
		}

		rows, err := db.QueryContext(ctx, `SELECT client_id, secret_hash FROM clients ORDER BY client_id`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		want := map[string]string{"partner": partnerSecret, "reporting": rotated[0].Secret}
		for rows.Next() {
			var id, hash string
			if err := rows.Scan(&id, &hash); err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256([]byte(want[id]))
			if hash != hex.EncodeToString(sum[:]) {
				t.Fatalf("client %s: stored %q, want the SHA-256 of its secret", id, hash)
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}

		if _, err := clients.ClientByID(ctx, "nobody"); !errors.Is(err, domain.ErrClientNotFound) {
			t.Fatalf("unknown client: %v", err)
		}
		twice := append(slices.Clone(clientSpecs), clientSpecs[0])
		if err := app.EnsureClients(ctx, clients, twice); err == nil {
			t.Fatal("a client configured twice is accepted")
		}
		weak := slices.Clone(clientSpecs)
		weak[1].Secret = "short"
		if err := app.EnsureClients(ctx, clients, weak); err == nil || strings.Contains(err.Error(), "short") {
			t.Fatalf("a short secret: %v, want an error that does not show it", err)
		}
	})
}

package customer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/platform/telemetry"
	"github.com/mercato-shop/mercato/services/customer"
)

const jobSecret = "9d1c4e7a2b5f8c3e6a0d9b2f5c8e1a4d7b0c3f6e9a2d5b8c1e4f7a0d3b6c9e2f"

// Config.Clients reach POST /oauth/token of the running service, and the
// secrets they hold never show when the configuration is printed or logged.
func TestService_IssuesTokensToConfiguredClients(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := bus.StartServer(ctx, bus.ServerConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	cfg := customer.Config{
		DSN:           storage.SQLiteDSN(t.TempDir(), "customer"),
		BusURL:        srv.ClientURL(),
		Issuer:        "mercato",
		Audience:      "mercato",
		AdminPassword: "admin password",
		Clients: []customer.Client{
			{ID: "reporting", Secret: jobSecret, Name: "Nightly report", Scopes: []string{"orders:read"}, Roles: []string{"admin"}},
		},
	}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "config", cfg, "client", cfg.Clients[0])
	slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "config", cfg, "client", cfg.Clients[0])
	for _, shown := range []string{fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg), logged.String()} {
		if strings.Contains(shown, jobSecret) || !strings.Contains(shown, "reporting") {
			t.Fatalf("the configuration shows the secret, or not the client: %s", shown)
		}
	}

	svc := customer.New(cfg, slog.New(slog.DiscardHandler), telemetry.NewTracerProvider("customer"))
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop(context.Background()) })

	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+svc.Addr()+"/oauth/token",
		strings.NewReader(url.Values{"grant_type": {"client_credentials"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("reporting", jobSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int    `json:"expires_in"`
		Scope       string `json:"scope"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("token: %d %v", resp.StatusCode, err)
	}
	// The lifetime of customers' tokens, 15 minutes by default.
	if tok.AccessToken == "" || tok.TokenType != "Bearer" || tok.ExpiresIn != 900 || tok.Scope != "orders:read" {
		t.Fatalf("token %+v", tok)
	}

	// A client the service cannot accept stops the start, without showing its secret.
	bad := cfg
	bad.DSN = storage.SQLiteDSN(t.TempDir(), "customer")
	bad.Clients = []customer.Client{{ID: "job", Secret: "too-short-a-secret", Name: "Job", Scopes: []string{"s"}}}
	other := customer.New(bad, slog.New(slog.DiscardHandler), telemetry.NewTracerProvider("customer"))
	err = other.Start(ctx)
	if err == nil {
		_ = other.Stop(context.Background())
		t.Fatal("a service with a 18-character client secret started")
	}
	if strings.Contains(err.Error(), "too-short-a-secret") || !strings.Contains(err.Error(), `client "job"`) {
		t.Fatalf("start error %q: want it to name the client, not its secret", err)
	}
}

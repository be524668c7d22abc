package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/mercato-shop/mercato/services/customer"
	"github.com/mercato-shop/mercato/shop"
)

// A machine client gets a token through the gateway with the client
// credentials grant, and the gateway lets it where its roles allow.
func TestShop_MachineClientThroughTheGateway(t *testing.T) {
	const secret = "0123456789abcdef0123456789abcdef0123456789abcdef"
	s, c := startShop(t, t.TempDir(), func(cfg *shop.Config) {
		cfg.Clients = []customer.Client{
			{ID: "reporting", Secret: secret, Name: "Nightly report", Scopes: []string{"orders:read"}, Roles: []string{"admin"}},
			{ID: "partner", Secret: strings.ToUpper(secret), Name: "A partner", Scopes: []string{"catalog:read"}},
		}
	})
	t.Cleanup(func() { stopShop(t, s) })

	token := func(id, secret string) (int, string) {
		req, err := http.NewRequest("POST", c.base+"/oauth/token", strings.NewReader(url.Values{"grant_type": {"client_credentials"}}.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(id, secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var out struct {
			AccessToken string `json:"access_token"`
		}
		_ = json.Unmarshal(body, &out)
		return resp.StatusCode, out.AccessToken
	}

	status, reporting := token("reporting", secret)
	if status != http.StatusOK || reporting == "" {
		t.Fatalf("reporting's token: %d", status)
	}
	if r := c.do("GET", "/admin/stats", reporting, nil); r.status != http.StatusOK {
		t.Fatalf("reporting reads the stats: %d %s", r.status, r.body)
	}
	_, partner := token("partner", strings.ToUpper(secret))
	c.expectProblem(c.do("GET", "/admin/stats", partner, nil), http.StatusForbidden, "a client without the admin role")
	if status, _ := token("reporting", strings.ToUpper(secret)); status != http.StatusUnauthorized {
		t.Fatalf("a wrong secret: %d, want 401", status)
	}
}

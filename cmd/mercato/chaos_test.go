package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mercato-shop/mercato/shop"
)

// `mercato chaos` lists the instances, flips an instance's switches and
// kills one, all through the gateway's admin API.
func TestChaos_SwitchesThroughTheGateway(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := shop.Start(ctx, shop.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), AdminPassword: "admin password",
		LogOutput: io.Discard, Replicas: map[string]int{"payment": 2}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	url := "http://" + s.GatewayAddr()
	t.Setenv("MERCATO_ADMIN_PASSWORD", "admin password")

	out, err := runMercato(t, "chaos", "list", "--url", url)
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	if n := strings.Count(out, "\npayment "); n != 2 || !strings.Contains(out, "\ninventory ") {
		t.Fatalf("list shows %d payment instances:\n%s", n, out)
	}

	products := func() int {
		req, _ := http.NewRequest("GET", url+"/api/products", nil)
		req.Header.Set("Cache-Control", "no-cache") // the service's answer, not the gateway's copy
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if out, err := runMercato(t, "chaos", "set", "inventory", "any", "--error-rate", "1", "--url", url); err != nil || !strings.Contains(out, "error rate 1") {
		t.Fatalf("set: %v\n%s", err, out)
	}
	if code := products(); code != http.StatusServiceUnavailable {
		t.Fatalf("catalog with inventory failing every call: %d", code)
	}
	if _, err := runMercato(t, "chaos", "set", "inventory", "any", "--url", url); err != nil {
		t.Fatalf("switches off: %v", err)
	}
	if code := products(); code != http.StatusOK {
		t.Fatalf("catalog after the switches went off: %d", code)
	}

	if _, err := runMercato(t, "chaos", "set", "inventory", "no-such-instance", "--url", url); err == nil {
		t.Fatal("an unknown instance was accepted")
	}
	if _, err := runMercato(t, "chaos", "set", "inventory", "any", "--error-rate", "2", "--url", url); err == nil {
		t.Fatal("an error rate of 2 was accepted")
	}
	// The payment provider's simulator speaks the same switches: its
	// charges fail.
	if out, err := runMercato(t, "chaos", "set", shop.ProviderService, "any", "--error-rate", "1", "--url", url); err != nil || !strings.Contains(out, "error rate 1") {
		t.Fatalf("set provider: %v\n%s", err, out)
	}
	req, _ := http.NewRequest("POST", s.Provider().URL()+"/v1/charges", strings.NewReader(`{"amount":"1.00","currency":"eur","source":"tok_ok"}`))
	req.Header.Set("Idempotency-Key", "chaos-test")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError || s.Provider().Captures() != 0 {
		t.Fatalf("a charge with the provider failing: %d, %d captures", resp.StatusCode, s.Provider().Captures())
	}

	out, err = runMercato(t, "chaos", "kill", "payment", "any", "--url", url)
	if err != nil || !strings.Contains(out, "killed") {
		t.Fatalf("kill: %v\n%s", err, out)
	}
}

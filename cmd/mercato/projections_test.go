package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mercato-shop/mercato/shop"
)

func runMercato(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd := rootCmd()
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(io.Discard)
	err := cmd.ExecuteContext(t.Context())
	return out.String(), err
}

// `mercato projections rebuild` logs in as the admin through the gateway,
// starts the rebuild and, with --wait, follows it until the projection is
// live again at the next generation; `list` shows where each stands.
func TestProjections_RebuildThroughTheGateway(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := shop.Start(ctx, shop.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), AdminPassword: "admin password", LogOutput: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	url := "http://" + s.GatewayAddr()
	// Something to replay: customer.registered.
	resp, err := http.Post(url+"/api/customers", "application/json", strings.NewReader(`{"email":"ann@example.com","name":"Ann","password":"correct horse"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("register: %d", resp.StatusCode)
	}

	t.Setenv("MERCATO_ADMIN_PASSWORD", "admin password")
	for deadline := time.Now().Add(30 * time.Second); ; {
		out, err := runMercato(t, "projections", "list", "--url", url)
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		if strings.Contains(out, "CUSTOMER 1/1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the registration never reached the read model:\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	out, err := runMercato(t, "projections", "rebuild", "orderview", "--wait", "--url", url)
	if err != nil {
		t.Fatalf("rebuild: %v\n%s", err, out)
	}
	if !strings.Contains(out, "orderview: dropped, replaying from the start (generation 2") ||
		!strings.Contains(out, "orderview: live at generation 2: ORDER 0/0, PAYMENT 0/0, CUSTOMER 1/1") {
		t.Fatalf("rebuild printed:\n%s", out)
	}

	out, err = runMercato(t, "projections", "list", "--url", url)
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[1], "orderview") || !strings.Contains(lines[1], " 2 ") ||
		!strings.HasPrefix(lines[2], "analytics") || !strings.Contains(lines[2], " 1 ") {
		t.Fatalf("list printed:\n%s", out)
	}

	if _, err := runMercato(t, "projections", "rebuild", "nothing", "--url", url); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("rebuild of an unknown projection: %v", err)
	}
	t.Setenv("MERCATO_ADMIN_PASSWORD", "wrong password")
	if _, err := runMercato(t, "projections", "list", "--url", url); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("a wrong password: %v", err)
	}
	t.Setenv("MERCATO_ADMIN_PASSWORD", "")
	if _, err := runMercato(t, "projections", "list", "--url", url); err == nil || !strings.Contains(err.Error(), "MERCATO_ADMIN_PASSWORD") {
		t.Fatalf("no password: %v", err)
	}
}

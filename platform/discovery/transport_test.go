package discovery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// echoServer answers every request with "<name> <host> <path>".
func echoServer(t *testing.T, name string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s %s", name, r.Host, r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, client *http.Client, rawURL string) (string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	if req.URL.Host != mustParse(t, rawURL).Host || req.Host != mustParse(t, rawURL).Host {
		t.Errorf("request was mutated: URL host %q, Host %q", req.URL.Host, req.Host)
	}
	return string(body), nil
}

func mustParse(t *testing.T, rawURL string) *url.URL {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestTransport_RoutesServiceNameToRegisteredInstance(t *testing.T) {
	forEachServer(t, func(t *testing.T, js jetstream.JetStream) {
		reg := newRegistry(t, js, testConfig(t, js))
		srv := echoServer(t, "svc")
		addr := srv.Listener.Addr().String()
		register(t, reg, Instance{Service: "svc", Addr: addr})
		eventually(t, 10*time.Second, func() string {
			if len(reg.Instances("svc")) == 0 {
				return "svc not in the registry's view"
			}
			return ""
		})

		client := &http.Client{Transport: Transport(reg, nil)}
		body, err := get(t, client, "http://svc/hello")
		if err != nil {
			t.Fatalf("get http://svc/hello: %v", err)
		}
		if want := "svc " + addr + " /hello"; body != want {
			t.Errorf("body = %q, want %q", body, want)
		}

		_, err = get(t, client, "http://missing/hello")
		if !errors.Is(err, ErrNoInstance) {
			t.Errorf("get http://missing/hello: err = %v, want ErrNoInstance", err)
		}
	})
}

// resolverFunc adapts a function to Resolver.
type resolverFunc func(ctx context.Context, service string) (Instance, error)

func (f resolverFunc) Resolve(ctx context.Context, service string) (Instance, error) {
	return f(ctx, service)
}

func TestTransport_PassesAddressesThrough(t *testing.T) {
	srv := echoServer(t, "direct")
	res := resolverFunc(func(_ context.Context, service string) (Instance, error) {
		t.Errorf("resolver called for %q", service)
		return Instance{}, ErrNoInstance
	})
	client := &http.Client{Transport: Transport(res, nil)}

	body, err := get(t, client, srv.URL+"/hello")
	if err != nil {
		t.Fatalf("get %s: %v", srv.URL, err)
	}
	if want := "direct " + srv.Listener.Addr().String() + " /hello"; body != want {
		t.Errorf("body = %q, want %q", body, want)
	}
}

func TestTransport_KeepsHostSetByCaller(t *testing.T) {
	srv := echoServer(t, "svc")
	client := &http.Client{Transport: Transport(Static(map[string][]string{"svc": {srv.Listener.Addr().String()}}), nil)}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://svc/hello", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "shop.example"
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if want := "svc shop.example /hello"; string(body) != want {
		t.Errorf("body = %q, want %q", body, want)
	}
}

func TestStatic_ResolvesRoundRobin(t *testing.T) {
	table := map[string][]string{"alpha": {"127.0.0.1:8001", "127.0.0.1:8002"}, "empty": nil}
	res := Static(table)
	table["alpha"][0] = "changed" // Static keeps its own copy

	var got []string
	for range 4 {
		inst, err := res.Resolve(t.Context(), "alpha")
		if err != nil {
			t.Fatalf("resolve alpha: %v", err)
		}
		if inst.Service != "alpha" {
			t.Errorf("instance service = %q, want alpha", inst.Service)
		}
		got = append(got, inst.Addr)
	}
	if want := "127.0.0.1:8001 127.0.0.1:8002 127.0.0.1:8001 127.0.0.1:8002"; strings.Join(got, " ") != want {
		t.Errorf("addresses = %v, want %s", got, want)
	}
	for _, service := range []string{"empty", "unknown"} {
		if _, err := res.Resolve(t.Context(), service); !errors.Is(err, ErrNoInstance) {
			t.Errorf("resolve %s: err = %v, want ErrNoInstance", service, err)
		}
	}
}

func TestStatic_RoutesThroughTransport(t *testing.T) {
	srv := echoServer(t, "static")
	client := &http.Client{Transport: Transport(Static(map[string][]string{"svc": {srv.Listener.Addr().String()}}), nil)}
	body, err := get(t, client, "http://svc/hello")
	if err != nil {
		t.Fatalf("get http://svc/hello: %v", err)
	}
	if want := "static " + srv.Listener.Addr().String() + " /hello"; body != want {
		t.Errorf("body = %q, want %q", body, want)
	}
}

package gateway

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/mercato-shop/mercato/deploy"
	"github.com/mercato-shop/mercato/platform/telemetry"
)

func TestGateway_RefusesWhatNoRouteAccepts(t *testing.T) {
	tests := []struct {
		name, method, path string
		wantStatus         int
		wantAllow          []string
	}{
		{name: "unknown path", method: http.MethodGet, path: "/nope", wantStatus: http.StatusNotFound},
		{name: "below a route", method: http.MethodGet, path: "/public/more", wantStatus: http.StatusNotFound},
		{name: "wildcard needs a segment", method: http.MethodGet, path: "/private/", wantStatus: http.StatusNotFound},
		{name: "wrong method", method: http.MethodDelete, path: "/public", wantStatus: http.StatusMethodNotAllowed,
			wantAllow: []string{"GET", "POST"}},
		{name: "HEAD on a GET route", method: http.MethodHead, path: "/admin", wantStatus: http.StatusMethodNotAllowed,
			wantAllow: []string{"GET"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			resp, body := do(t, f.client, newRequest(t, tt.method, f.url+tt.path, nil))

			if tt.method == http.MethodHead {
				// A HEAD answer has no body to read the problem from.
				if resp.StatusCode != tt.wantStatus {
					t.Fatalf("status %d, want %d", resp.StatusCode, tt.wantStatus)
				}
			} else {
				wantProblem(t, resp, body, tt.wantStatus)
			}
			if tt.wantAllow != nil {
				allow := strings.Split(resp.Header.Get("Allow"), ", ")
				slices.Sort(allow)
				if !slices.Equal(allow, tt.wantAllow) {
					t.Fatalf("Allow %q, want %q", resp.Header.Get("Allow"), tt.wantAllow)
				}
			}
			f.up.wantNothing(t)
		})
	}
}

// unsized hides a body's length, so that the client sends it chunked.
type unsized struct{ io.Reader }

func TestGateway_BoundsRequestBodies(t *testing.T) {
	tests := []struct {
		name    string
		size    int
		chunked bool
	}{
		{name: "at the limit", size: testMaxBody},
		{name: "over the limit", size: testMaxBody + 1},
		{name: "far over the limit", size: 1 << 20},
		{name: "chunked at the limit", size: testMaxBody, chunked: true},
		{name: "chunked over the limit", size: testMaxBody + 1, chunked: true},
		{name: "chunked far over the limit", size: 1 << 20, chunked: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			payload := strings.Repeat("x", tt.size)
			var body io.Reader = strings.NewReader(payload)
			if tt.chunked {
				body = unsized{body}
			}
			req := newRequest(t, http.MethodPost, f.url+"/public", body)
			if tt.chunked != (req.ContentLength == 0) {
				t.Fatalf("content length %d for a chunked=%v request", req.ContentLength, tt.chunked)
			}
			resp, respBody := do(t, f.client, req)

			if tt.size <= testMaxBody {
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d, body %s", resp.StatusCode, respBody)
				}
				if got := f.up.wantOne(t); !got.Complete || string(got.Body) != payload {
					t.Fatalf("upstream got %d bytes (complete %v), want %d", len(got.Body), got.Complete, len(payload))
				}
				return
			}
			wantProblem(t, resp, respBody, http.StatusRequestEntityTooLarge)
			// Not even the start of a chunked body: the gateway reads it
			// whole first. Close waits for the upstream's handlers.
			f.up.srv.Close()
			f.up.wantNothing(t)
		})
	}
}

func TestGateway_UpstreamFailuresAreProblems(t *testing.T) {
	tests := []struct {
		name       string
		path       string
		wantStatus int
	}{
		{name: "no instance", path: "/down", wantStatus: http.StatusServiceUnavailable},
		{name: "connection refused", path: "/refused", wantStatus: http.StatusBadGateway},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			req := newRequest(t, http.MethodGet, f.url+tt.path, nil)
			req.Header.Set(telemetry.CorrelationHeader, "corr-1")
			resp, body := do(t, f.client, req)

			p := wantProblem(t, resp, body, tt.wantStatus)
			if p.CorrelationID != "corr-1" || p.Instance != tt.path {
				t.Fatalf("problem %+v", p)
			}
			f.up.wantNothing(t)
		})
	}
}

func TestGateway_CarriesTheCorrelationID(t *testing.T) {
	tests := []struct {
		name       string
		sent       string // "" lets the gateway make one
		path       string
		wantStatus int
		upstream   bool
	}{
		{name: "proxied", sent: "corr-42", path: "/public", wantStatus: http.StatusOK, upstream: true},
		{name: "proxied, generated", path: "/public", wantStatus: http.StatusOK, upstream: true},
		{name: "refused", sent: "corr-43", path: "/nope", wantStatus: http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			req := newRequest(t, http.MethodGet, f.url+tt.path, nil)
			if tt.sent != "" {
				req.Header.Set(telemetry.CorrelationHeader, tt.sent)
			}
			resp, body := do(t, f.client, req)

			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tt.wantStatus, body)
			}
			echoed := resp.Header.Values(telemetry.CorrelationHeader)
			if len(echoed) != 1 || echoed[0] == "" || (tt.sent != "" && echoed[0] != tt.sent) {
				t.Fatalf("response %s %q, want exactly one, %q", telemetry.CorrelationHeader, echoed, tt.sent)
			}
			if !tt.upstream {
				f.up.wantNothing(t)
				return
			}
			wantHeader(t, f.up.wantOne(t).Header, telemetry.CorrelationHeader, echoed[0])
		})
	}
}

func TestGateway_ShippedRoutes(t *testing.T) {
	customer, inventory, order, payment := newUpstream(t), newUpstream(t), newUpstream(t), newUpstream(t)
	keys := newSigner(t, "k1")
	url, client := serve(t, string(deploy.GatewayRoutes()), map[string][]string{
		"customer":  {customer.addr()},
		"inventory": {inventory.addr()},
		"order":     {order.addr()},
		"payment":   {payment.addr()},
	}, keys.jwksKeyfunc(t))

	tests := []struct {
		method, path string
		token        bool
		wantStatus   int
		wantAt       *upstream
	}{
		{method: http.MethodGet, path: "/api/products/42", wantStatus: http.StatusOK, wantAt: inventory},
		{method: http.MethodGet, path: "/api/products", wantStatus: http.StatusOK, wantAt: inventory},
		{method: http.MethodPost, path: "/api/customers", wantStatus: http.StatusOK, wantAt: customer},
		{method: http.MethodPost, path: "/api/auth/login", wantStatus: http.StatusOK, wantAt: customer},
		{method: http.MethodGet, path: "/.well-known/jwks.json", wantStatus: http.StatusOK, wantAt: customer},
		{method: http.MethodGet, path: "/api/customers/me", wantStatus: http.StatusUnauthorized},
		{method: http.MethodGet, path: "/api/customers/me", token: true, wantStatus: http.StatusOK, wantAt: customer},
		{method: http.MethodGet, path: "/api/customers", wantStatus: http.StatusMethodNotAllowed},
		{method: http.MethodDelete, path: "/api/products/42", wantStatus: http.StatusMethodNotAllowed},
		{method: http.MethodPost, path: "/api/orders", wantStatus: http.StatusUnauthorized},
		{method: http.MethodPost, path: "/api/orders", token: true, wantStatus: http.StatusOK, wantAt: order},
		{method: http.MethodGet, path: "/api/orders/7", token: true, wantStatus: http.StatusOK, wantAt: order},
		{method: http.MethodGet, path: "/api/payments?order_id=7", token: true, wantStatus: http.StatusOK, wantAt: payment},
		{method: http.MethodGet, path: "/api/payments", wantStatus: http.StatusUnauthorized},
		{method: http.MethodGet, path: "/api/nowhere", wantStatus: http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			all := []*upstream{customer, inventory, order, payment}
			before := map[*upstream]int{}
			for _, up := range all {
				before[up] = len(up.received())
			}
			req := newRequest(t, tt.method, url+tt.path, nil)
			if tt.token {
				req.Header.Set("Authorization", "Bearer "+keys.sign(t, claimsFor("c-1", "customer")))
			}
			resp, body := do(t, client, req)

			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tt.wantStatus, body)
			}
			for _, up := range all {
				got := up.received()[before[up]:]
				want := 0
				if up == tt.wantAt {
					want = 1
				}
				if len(got) != want {
					t.Fatalf("an upstream saw %d requests, want %d", len(got), want)
				}
				if want == 1 && got[0].URI != tt.path {
					t.Fatalf("upstream saw %s, want %s", got[0].URI, tt.path)
				}
			}
		})
	}
}

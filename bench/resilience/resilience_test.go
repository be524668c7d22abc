// Package resilience measures what platform/resilience adds to a call: the
// same request sent bare and through a target's policies (timeout, retry,
// circuit breaker, bulkhead), in one run. See bench/README.md.
package resilience

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mercato-shop/mercato/deploy"
	"github.com/mercato-shop/mercato/platform/resilience"
)

// answer is a round tripper that answers at once without I/O: what is left
// to measure is the wrapper.
type answer struct{}

func (answer) RoundTrip(*http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Header: http.Header{}}, nil
}

func policies(b *testing.B) *resilience.Policies {
	b.Helper()
	p, err := resilience.Load(deploy.Resilience(), nil)
	if err != nil {
		b.Fatal(err)
	}
	return p
}

func run(b *testing.B, rt http.RoundTripper, url string) {
	b.Helper()
	b.ReportAllocs()
	for b.Loop() {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			b.Fatal(err)
		}
		resp, err := rt.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// The wrapper alone: a call that costs nothing otherwise.
func BenchmarkBareCall(b *testing.B) { run(b, answer{}, "http://inventory/api/products") }

func BenchmarkGuardedCall(b *testing.B) {
	run(b, policies(b).ServiceTransport(answer{}), "http://inventory/api/products")
}

// The same over loopback HTTP, as between two services of `mercato up`.
func loopback(b *testing.B) (string, *http.Transport) {
	b.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"ok":true}`))
	}))
	b.Cleanup(srv.Close)
	t := http.DefaultTransport.(*http.Transport).Clone()
	b.Cleanup(t.CloseIdleConnections)
	return strings.TrimPrefix(srv.URL, "http://"), t
}

func BenchmarkBareHTTP(b *testing.B) {
	addr, t := loopback(b)
	run(b, t, "http://"+addr+"/")
}

func BenchmarkGuardedHTTP(b *testing.B) {
	addr, t := loopback(b)
	run(b, policies(b).Transport("inventory", t), "http://"+addr+"/")
}

// failing answers every call with a 500.
type failing struct{}

func (failing) RoundTrip(*http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: http.StatusInternalServerError, Body: http.NoBody, Header: http.Header{}}, nil
}

// A call while the breaker is open: how fast it fails. POSTs are not
// retried, so five failing ones open the shipped default breaker (five
// failures in a row) at once.
func BenchmarkOpenBreaker(b *testing.B) {
	rt := policies(b).Transport("inventory", failing{})
	post := func() error {
		req, err := http.NewRequest(http.MethodPost, "http://inventory/api/orders", nil)
		if err != nil {
			b.Fatal(err)
		}
		resp, err := rt.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	for range 5 {
		if err := post(); err != nil {
			b.Fatalf("opening the breaker: %v", err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := post(); !errors.Is(err, resilience.ErrOpen) {
			b.Fatalf("%v, want the breaker open", err)
		}
	}
}

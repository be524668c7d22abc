package gateway

import (
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mercato-shop/mercato/platform/discovery"
)

// versioned is a lister of one service's instances, each announcing a version.
type versioned map[string][]discovery.Instance

func (v versioned) Instances(service string) []discovery.Instance { return v[service] }

const splitRoutes = jwtLines + `ratelimit:
  default: off
routes:
  - path: /api/products
    methods: [GET]
    service: inventory
    auth: none
    split:
      weights: {stable: %d, canary: %d}
      header: X-Canary
`

// splitGateway serves splitRoutes with the weights given, over one
// instance of each version that answers with its version.
func splitGateway(t *testing.T, stable, canary int) http.Handler {
	t.Helper()
	list := versioned{}
	for _, v := range []string{"stable", "canary"} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, v) }))
		t.Cleanup(srv.Close)
		list["inventory"] = append(list["inventory"], discovery.Instance{Service: "inventory", ID: v, Addr: strings.TrimPrefix(srv.URL, "http://"), Version: v})
	}
	balancer, err := discovery.NewBalancer(list, discovery.BalancerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig(fmt.Appendf(nil, splitRoutes, stable, canary))
	if err != nil {
		t.Fatal(err)
	}
	return New(cfg, discovery.Transport(balancer, nil), newSigner(t, "k1").jwksKeyfunc(t), slog.New(slog.DiscardHandler))
}

// 10,000 requests split 90/10 land within a tolerance of five standard
// deviations of the binomial (±150 of 1,000): a wrong split fails, a right
// one fails about once in two million runs.
func TestSplit_WeightsDivideTheRequests(t *testing.T) {
	gw := splitGateway(t, 90, 10)
	const n = 10_000
	got := map[string]int{}
	for range n {
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/api/products", nil))
		if w.Code != http.StatusOK {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
		got[w.Body.String()]++
	}
	want, sd := 0.1*n, math.Sqrt(n*0.1*0.9)
	if d := math.Abs(float64(got["canary"]) - want); d > 5*sd || got["stable"]+got["canary"] != n {
		t.Fatalf("split %v, want canary within %.0f of %.0f", got, 5*sd, want)
	}
	t.Logf("split of %d: %v", n, got)
}

// The header picks a version whatever its weight; blue-green is weights
// 100 and 0, and a value naming no version of the split is ignored.
func TestSplit_HeaderAndBlueGreen(t *testing.T) {
	gw := splitGateway(t, 100, 0)
	send := func(header string) string {
		req := httptest.NewRequest(http.MethodGet, "/api/products", nil)
		if header != "" {
			req.Header.Set("X-Canary", header)
		}
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, req)
		return w.Body.String()
	}
	for range 50 {
		if v := send(""); v != "stable" {
			t.Fatalf("weight 0 served a request: %s", v)
		}
		if v := send("canary"); v != "canary" {
			t.Fatalf("X-Canary: canary went to %s", v)
		}
		if v := send("v9"); v != "stable" {
			t.Fatalf("X-Canary: v9 went to %s", v)
		}
	}
}

func TestSplit_Validation(t *testing.T) {
	for bad, want := range map[string]string{
		"{stable: 0, canary: 0}":  "above 0",
		"{stable: -1, canary: 5}": "from 0 to",
		"{\"bad version\": 1}":    "must be letters",
		"{}":                      "at least one version",
	} {
		_, err := ParseConfig([]byte(strings.Replace(splitRoutes, "{stable: %d, canary: %d}", bad, 1)))
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "line 8") {
			t.Errorf("weights %s: %v, want %q at the route's line", bad, err, want)
		}
	}
	_, err := ParseConfig([]byte(strings.Replace(fmt.Sprintf(splitRoutes, 1, 1), "X-Canary", "Bad Header", 1)))
	if err == nil || !strings.Contains(err.Error(), "not a header name") {
		t.Errorf("a bad header: %v", err)
	}
	_, err = ParseConfig([]byte(fmt.Sprintf(splitRoutes, 1, 1) + "    cache: 5s\n"))
	if err == nil || !strings.Contains(err.Error(), "cross versions") {
		t.Errorf("a cached split: %v", err)
	}
}

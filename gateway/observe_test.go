package gateway

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mercato-shop/mercato/platform/discovery"
	"github.com/mercato-shop/mercato/platform/telemetry"
	"github.com/mercato-shop/mercato/platform/web"
)

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.buf.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["msg"] == "access" {
			out = append(out, rec)
		}
	}
	return out
}

// Each request leaves one access record, with its route, the instance that
// answered, the status, the time taken and the correlation id; and counts in
// the metrics by route and by upstream instance.
func TestGateway_AccessLogAndMetrics(t *testing.T) {
	up := newUpstream(t)
	logs := &syncBuffer{}
	cfg, err := ParseConfig([]byte(testRoutes))
	if err != nil {
		t.Fatal(err)
	}
	gw := New(cfg, discovery.Transport(discovery.Static(map[string][]string{"customer": {up.addr()}}), nil),
		newSigner(t, "k1").jwksKeyfunc(t), telemetry.NewLogger(logs, "gateway", slog.LevelInfo))
	srv := httptest.NewServer(web.Correlate(gw))
	t.Cleanup(srv.Close)

	req := newRequest(t, "GET", srv.URL+"/public", nil)
	req.Header.Set(telemetry.CorrelationHeader, "corr-1")
	if resp, _ := do(t, srv.Client(), req); resp.StatusCode != http.StatusOK {
		t.Fatalf("public: %d", resp.StatusCode)
	}
	if resp, _ := do(t, srv.Client(), newRequest(t, "GET", srv.URL+"/private/1", nil)); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("private without a token: %d", resp.StatusCode)
	}
	do(t, srv.Client(), newRequest(t, "GET", srv.URL+"/nowhere/at/all", nil))

	recs := logs.records(t)
	if len(recs) != 3 {
		t.Fatalf("%d access records, want 3: %v", len(recs), recs)
	}
	first := recs[0]
	for k, want := range map[string]any{"route": "GET,POST /public", "upstream": up.addr(), "status": 200.0,
		"method": "GET", "path": "/public", "correlation_id": "corr-1"} {
		if first[k] != want {
			t.Errorf("access record %s = %v, want %v (%v)", k, first[k], want, first)
		}
	}
	if d, ok := first["duration_ms"].(float64); !ok || d <= 0 {
		t.Errorf("duration_ms %v", first["duration_ms"])
	}
	if recs[1]["route"] != "GET,POST /private/{id}" || recs[1]["upstream"] != "" || recs[1]["status"] != 401.0 {
		t.Errorf("refused request's record: %v", recs[1])
	}
	if recs[2]["route"] != "none" || recs[2]["status"] != 404.0 {
		t.Errorf("unrouted request's record: %v", recs[2])
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(gw.Collector())
	want := `
# HELP mercato_gateway_requests_total Requests answered by the gateway, by route and status.
# TYPE mercato_gateway_requests_total counter
mercato_gateway_requests_total{code="200",route="GET,POST /public"} 1
mercato_gateway_requests_total{code="401",route="GET,POST /private/{id}"} 1
mercato_gateway_requests_total{code="404",route="none"} 1
# HELP mercato_gateway_upstream_responses_total Responses from upstream instances, by service, instance and status.
# TYPE mercato_gateway_upstream_responses_total counter
mercato_gateway_upstream_responses_total{code="200",instance="` + up.addr() + `",service="customer"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "mercato_gateway_requests_total", "mercato_gateway_upstream_responses_total"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(gw.Collector(), "mercato_gateway_request_duration_seconds"); n != 3 {
		t.Fatalf("%d duration series, want one per route seen (3)", n)
	}
}

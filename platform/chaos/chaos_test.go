package chaos_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mercato-shop/mercato/platform/chaos"
	"github.com/mercato-shop/mercato/platform/web"
)

func serve(f *chaos.Faults, reached *atomic.Int64) http.Handler {
	return f.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached.Add(1) }))
}

func TestMiddleware_ErrorRateAnswersForTheService(t *testing.T) {
	f := &chaos.Faults{}
	var reached atomic.Int64
	h := serve(f, &reached)
	call := func(path string) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec.Code
	}
	if code := call("/api/x"); code != http.StatusOK || reached.Load() != 1 {
		t.Fatalf("switches off: %d, reached %d", code, reached.Load())
	}
	if err := f.Set(chaos.Settings{ErrorRate: 1}); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if code := call("/api/x"); code != http.StatusServiceUnavailable {
			t.Fatalf("error rate 1: %d", code)
		}
	}
	if reached.Load() != 1 {
		t.Fatalf("an injected error reached the handler (%d calls)", reached.Load())
	}
	// Health checks and the switches themselves keep working.
	for _, p := range []string{"/healthz", "/readyz", "/admin/chaos"} {
		if code := call(p); code != http.StatusOK {
			t.Fatalf("%s under error rate 1: %d", p, code)
		}
	}
	// About half at 0.5: not none, not all.
	_ = f.Set(chaos.Settings{ErrorRate: 0.5})
	failed := 0
	for range 400 {
		if call("/api/x") == http.StatusServiceUnavailable {
			failed++
		}
	}
	if failed < 100 || failed > 300 {
		t.Fatalf("error rate 0.5 failed %d of 400", failed)
	}
}

func TestMiddleware_LatencyEndsWithTheCaller(t *testing.T) {
	f := &chaos.Faults{}
	_ = f.Set(chaos.Settings{Latency: chaos.MaxLatency})
	var reached atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a caller that has given up
	done := make(chan struct{})
	go func() {
		serve(f, &reached).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/api/x", nil).WithContext(ctx))
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second): // far below MaxLatency: the wait did end early
		t.Fatal("the added latency outlived the caller")
	}
	if reached.Load() != 0 {
		t.Fatal("a request whose caller gave up reached the handler")
	}
}

func TestRoutes_AdminSetsTheSwitchesAndKills(t *testing.T) {
	f := &chaos.Faults{}
	var kills atomic.Int64
	killed := make(chan struct{}, 2)
	mux := http.NewServeMux()
	f.Routes(mux, func(context.Context) { kills.Add(1); killed <- struct{}{} })
	do := func(method, path, body string, roles string) (int, string) {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(web.SubjectHeader, "a-1")
		req.Header.Set(web.RolesHeader, roles)
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	if code, _ := do("PUT", "/admin/chaos", `{"error_rate":1}`, "customer"); code != http.StatusForbidden {
		t.Fatalf("customer sets switches: %d", code)
	}
	for _, bad := range []string{`{"error_rate":2}`, `{"error_rate":-0.1}`, `{"latency":"x"}`, `{"latency":"1h"}`, `{"latency":"-1s"}`, `{"what":1}`} {
		if code, body := do("PUT", "/admin/chaos", bad, "admin"); code != http.StatusBadRequest {
			t.Fatalf("%s: %d %s", bad, code, body)
		}
	}
	if code, body := do("PUT", "/admin/chaos", `{"error_rate":0.25,"latency":"150ms"}`, "admin"); code != http.StatusOK {
		t.Fatalf("set: %d %s", code, body)
	}
	code, body := do("GET", "/admin/chaos", "", "admin")
	var got struct {
		ErrorRate float64 `json:"error_rate"`
		Latency   string  `json:"latency"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &got) != nil || got.ErrorRate != 0.25 || got.Latency != "150ms" {
		t.Fatalf("get: %d %s", code, body)
	}
	if s := f.Get(); s.ErrorRate != 0.25 || s.Latency != 150*time.Millisecond {
		t.Fatalf("switches %+v", s)
	}

	if code, _ := do("POST", "/admin/chaos/kill", "", "admin"); code != http.StatusAccepted {
		t.Fatalf("kill: %d", code)
	}
	if code, _ := do("POST", "/admin/chaos/kill", "", "admin"); code != http.StatusConflict {
		t.Fatalf("second kill: %d", code)
	}
	<-killed
	if n := kills.Load(); n != 1 {
		t.Fatalf("killed %d times", n)
	}
}

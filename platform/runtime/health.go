package runtime

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Health serves /healthz (the process is alive) and /readyz (its
// dependencies answer and it is not shutting down).
type Health struct {
	mu       sync.Mutex
	checks   []check
	draining atomic.Bool
}

type check struct {
	name string
	fn   func(ctx context.Context) error
}

// Check adds a readiness check, such as a database ping.
func (h *Health) Check(name string, fn func(ctx context.Context) error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks = append(h.checks, check{name, fn})
}

// Drain makes /readyz fail so that load balancers stop sending work before
// the listener closes.
func (h *Health) Drain() { h.draining.Store(true) }

// Register adds GET /healthz and GET /readyz to mux.
func (h *Health) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeStatus(w, http.StatusOK, map[string]any{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", h.ready)
}

func (h *Health) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	h.mu.Lock()
	checks := append([]check(nil), h.checks...)
	h.mu.Unlock()

	status, code := "ready", http.StatusOK
	results := make(map[string]string, len(checks))
	for _, c := range checks {
		if err := c.fn(ctx); err != nil {
			results[c.name] = err.Error()
			status, code = "unavailable", http.StatusServiceUnavailable
			continue
		}
		results[c.name] = "ok"
	}
	if h.draining.Load() {
		status, code = "draining", http.StatusServiceUnavailable
	}
	writeStatus(w, code, map[string]any{"status": status, "checks": results})
}

func writeStatus(w http.ResponseWriter, code int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

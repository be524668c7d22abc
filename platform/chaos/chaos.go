// Package chaos holds the fault switches of one service instance, for tests
// and demos: answer a share of requests with errors, add latency to every
// request, or kill the instance (it stops heartbeating and its listener
// closes, as after a crash). They are set through the instance's admin API,
// which the gateway reaches at /admin/chaos/{service}/{instance}, and by
// `mercato chaos`.
package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mercato-shop/mercato/platform/web"
)

// MaxLatency bounds the latency a switch may add.
const MaxLatency = 30 * time.Second

// Settings are the switches: ErrorRate of requests (0 to 1) answer 503;
// every request first waits Latency.
type Settings struct {
	ErrorRate float64       `json:"error_rate"`
	Latency   time.Duration `json:"-"`
}

type settingsJSON struct {
	ErrorRate float64 `json:"error_rate"`
	Latency   string  `json:"latency"` // a Go duration: "250ms"
}

// MarshalJSON writes Latency as a duration string.
func (s Settings) MarshalJSON() ([]byte, error) {
	return json.Marshal(settingsJSON{ErrorRate: s.ErrorRate, Latency: s.Latency.String()})
}

// Validate says what is wrong with s.
func (s Settings) Validate() []web.FieldError {
	var errs []web.FieldError
	if math.IsNaN(s.ErrorRate) || s.ErrorRate < 0 || s.ErrorRate > 1 {
		errs = append(errs, web.FieldError{Field: "error_rate", Message: "must be from 0 to 1"})
	}
	if s.Latency < 0 || s.Latency > MaxLatency {
		errs = append(errs, web.FieldError{Field: "latency", Message: "must be from 0 to " + MaxLatency.String()})
	}
	return errs
}

// Faults are one instance's switches; the zero value injects nothing. It is
// safe for concurrent use.
type Faults struct {
	errorRate atomic.Uint64 // math.Float64bits
	latency   atomic.Int64
}

// Set changes the switches.
func (f *Faults) Set(s Settings) error {
	if errs := s.Validate(); len(errs) > 0 {
		return fmt.Errorf("chaos: %s %s", errs[0].Field, errs[0].Message)
	}
	f.errorRate.Store(math.Float64bits(s.ErrorRate))
	f.latency.Store(int64(s.Latency))
	return nil
}

// Get returns the switches.
func (f *Faults) Get() Settings {
	return Settings{ErrorRate: math.Float64frombits(f.errorRate.Load()), Latency: time.Duration(f.latency.Load())}
}

// exempt paths keep answering: health checks, metrics and the switches
// themselves.
func exempt(path string) bool {
	return path == "/healthz" || path == "/readyz" || path == "/metrics" || strings.HasPrefix(path, "/admin/chaos")
}

// Middleware applies the switches to every request but health checks and
// the chaos API: first the latency (ended early if the caller gives up),
// then, at the error rate, a 503 problem instead of the answer.
func (f *Faults) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if exempt(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		s := f.Get()
		if s.Latency > 0 {
			t := time.NewTimer(s.Latency)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		if s.ErrorRate > 0 && rand.Float64() < s.ErrorRate {
			web.Error(w, r, http.StatusServiceUnavailable, "fault injected by chaos switch")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Routes adds the admin API of the switches to mux, for callers with the
// admin role (identity headers set by the gateway):
//
//	GET  /admin/chaos       the switches
//	PUT  /admin/chaos       {"error_rate":0.5,"latency":"200ms"}
//	POST /admin/chaos/kill  202, then the instance dies as in a crash
//
// kill is called once, after the answer is sent; nil leaves the kill route
// out.
func (f *Faults) Routes(mux *http.ServeMux, kill func(ctx context.Context)) {
	admin := func(h http.HandlerFunc) http.Handler { return web.RequireRole("admin", h) }
	mux.Handle("GET /admin/chaos", admin(func(w http.ResponseWriter, r *http.Request) {
		web.WriteJSON(w, http.StatusOK, f.Get())
	}))
	mux.Handle("PUT /admin/chaos", admin(func(w http.ResponseWriter, r *http.Request) {
		var in settingsJSON
		if p := web.Decode(w, r, &in, 4<<10); p != nil {
			web.WriteProblem(w, r, p)
			return
		}
		s := Settings{ErrorRate: in.ErrorRate}
		if in.Latency != "" {
			d, err := time.ParseDuration(in.Latency)
			if err != nil {
				web.WriteProblem(w, r, web.Invalid(web.FieldError{Field: "latency", Message: "must be a duration such as 250ms"}))
				return
			}
			s.Latency = d
		}
		if errs := s.Validate(); len(errs) > 0 {
			web.WriteProblem(w, r, web.Invalid(errs...))
			return
		}
		_ = f.Set(s)
		web.WriteJSON(w, http.StatusOK, f.Get())
	}))
	if kill == nil {
		return
	}
	var killed atomic.Bool
	mux.Handle("POST /admin/chaos/kill", admin(func(w http.ResponseWriter, r *http.Request) {
		if !killed.CompareAndSwap(false, true) {
			web.Error(w, r, http.StatusConflict, "the instance is dying already")
			return
		}
		web.WriteJSON(w, http.StatusAccepted, map[string]string{"status": "killed"})
		_ = http.NewResponseController(w).Flush()
		// Not in this request: dying closes the listener it came through.
		go kill(context.WithoutCancel(r.Context()))
	}))
}

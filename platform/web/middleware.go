package web

import (
	"log/slog"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/mercato-shop/mercato/platform/telemetry"
)

// Identity headers: the gateway verifies the caller's token, strips any
// client-sent copies of these headers and sets them for the services behind it.
const (
	SubjectHeader = "X-Mercato-Subject"
	RolesHeader   = "X-Mercato-Roles"
)

// Caller is who made a request, as vouched for by the gateway.
type Caller struct {
	Subject string
	Roles   []string
}

// CallerOf reads the identity headers; ok is false for an anonymous request.
func CallerOf(r *http.Request) (c Caller, ok bool) {
	c.Subject = r.Header.Get(SubjectHeader)
	if roles := r.Header.Get(RolesHeader); roles != "" {
		c.Roles = strings.Split(roles, ",")
	}
	return c, c.Subject != ""
}

// RequireRole answers 403 to callers without role; the gateway checks roles
// at the edge, and a service checks again behind it.
func RequireRole(role string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if caller, ok := CallerOf(r); !ok || !caller.HasRole(role) {
			Error(w, r, http.StatusForbidden, "this needs the role "+role)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// HasRole reports whether the caller has role.
func (c Caller) HasRole(role string) bool {
	for _, r := range c.Roles {
		if r == role {
			return true
		}
	}
	return false
}

// Correlate puts the request's X-Correlation-ID (or a new one) in its context
// and echoes it on the response.
func Correlate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(telemetry.CorrelationHeader)
		if !validCorrelationID(id) {
			id = telemetry.NewCorrelationID()
		}
		w.Header().Set(telemetry.CorrelationHeader, id)
		next.ServeHTTP(w, r.WithContext(telemetry.WithCorrelationID(r.Context(), id)))
	})
}

// validCorrelationID keeps client-chosen ids short and printable so they are
// safe to log and to copy into other headers.
func validCorrelationID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range id {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// Recover turns a panicking handler into a 500 problem instead of a dropped
// connection, and logs it.
func Recover(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				if v := recover(); v != nil {
					if v == http.ErrAbortHandler {
						panic(v)
					}
					logger.ErrorContext(r.Context(), "handler panicked", "method", r.Method, "path", r.URL.Path, "panic", v)
					Error(w, r, http.StatusInternalServerError, "")
				}
			}()
			next.ServeHTTP(w, r)
		})
	}
}

// Instrument wraps a service's handler with what every request needs: a
// server span continuing the caller's trace, the correlation id, an access
// log record (at debug level), and panic recovery.
func Instrument(h http.Handler, tp trace.TracerProvider, logger *slog.Logger) http.Handler {
	return Trace(tp)(Correlate(AccessLog(logger)(Recover(logger)(h))))
}

// AccessLog writes one debug record per request: method, path, status and
// duration, with the request's trace and correlation ids.
func AccessLog(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !logger.Enabled(r.Context(), slog.LevelDebug) {
				next.ServeHTTP(w, r)
				return
			}
			start := time.Now()
			sw := &StatusWriter{ResponseWriter: w, Status: http.StatusOK}
			next.ServeHTTP(sw, r)
			logger.DebugContext(r.Context(), "request", "method", r.Method, "path", r.URL.Path,
				"status", sw.Status, "duration", time.Since(start))
		})
	}
}

// StatusWriter remembers the status code, for logs and metrics: start it
// at 200, which a handler that never calls WriteHeader answers. Unwrap lets
// http.ResponseController reach the underlying writer (flushing server-sent
// events, deadlines).
type StatusWriter struct {
	http.ResponseWriter
	Status int
}

func (w *StatusWriter) WriteHeader(code int) {
	w.Status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *StatusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

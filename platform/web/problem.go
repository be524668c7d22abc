// Package web holds what every HTTP adapter in mercato shares: RFC 9457
// problem responses, strict JSON decoding, and the middleware that carries
// correlation ids and traces through a request.
package web

import (
	"encoding/json"
	"net/http"

	"github.com/mercato-shop/mercato/platform/telemetry"
)

// ProblemContentType is the media type of every error response (RFC 9457).
const ProblemContentType = "application/problem+json"

// Problem is an RFC 9457 problem detail.
type Problem struct {
	Type          string       `json:"type"`
	Title         string       `json:"title"`
	Status        int          `json:"status"`
	Detail        string       `json:"detail,omitempty"`
	Instance      string       `json:"instance,omitempty"`
	Errors        []FieldError `json:"errors,omitempty"`
	CorrelationID string       `json:"correlation_id,omitempty"`
}

// FieldError names one invalid field of a request body.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Error implements error so that a Problem can travel up as one.
func (p *Problem) Error() string {
	if p.Detail != "" {
		return p.Title + ": " + p.Detail
	}
	return p.Title
}

// NewProblem returns a problem with the standard title of status.
func NewProblem(status int, detail string) *Problem {
	return &Problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail}
}

// Invalid returns a 400 problem listing the invalid fields.
func Invalid(errs ...FieldError) *Problem {
	p := NewProblem(http.StatusBadRequest, "the request has invalid fields")
	p.Title = "Validation failed"
	p.Errors = errs
	return p
}

// WriteProblem writes p as application/problem+json. The correlation id and
// the request path are filled in when p leaves them empty.
func WriteProblem(w http.ResponseWriter, r *http.Request, p *Problem) {
	out := *p
	if out.Type == "" {
		out.Type = "about:blank"
	}
	if out.Title == "" {
		out.Title = http.StatusText(out.Status)
	}
	if out.Instance == "" {
		out.Instance = r.URL.Path
	}
	if out.CorrelationID == "" {
		out.CorrelationID = telemetry.CorrelationID(r.Context())
	}
	w.Header().Set("Content-Type", ProblemContentType)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(out.Status)
	_ = json.NewEncoder(w).Encode(out)
}

// Error writes a problem with status and detail.
func Error(w http.ResponseWriter, r *http.Request, status int, detail string) {
	WriteProblem(w, r, NewProblem(status, detail))
}

// WriteJSON writes v as JSON with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

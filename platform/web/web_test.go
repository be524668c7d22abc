package web

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mercato-shop/mercato/platform/telemetry"
)

type body struct {
	Email string `json:"email"`
	Count int    `json:"count"`
}

func TestDecode_RejectsBadBodies(t *testing.T) {
	tests := []struct {
		name        string
		contentType string
		body        string
		max         int64
		wantStatus  int
		wantField   string
	}{
		{name: "malformed", body: `{"email":`, wantStatus: 400},
		{name: "not an object", body: `nonsense`, wantStatus: 400},
		{name: "empty", body: ``, wantStatus: 400},
		{name: "unknown field", body: `{"email":"a@b.co","admin":true}`, wantStatus: 400},
		{name: "wrong type", body: `{"count":"three"}`, wantStatus: 400, wantField: "count"},
		{name: "trailing data", body: `{"email":"a@b.co"}{"email":"c@d.co"}`, wantStatus: 400},
		{name: "too large", body: `{"email":"` + strings.Repeat("a", 200) + `"}`, max: 64, wantStatus: 413},
		{name: "not json", contentType: "text/plain", body: `{}`, wantStatus: 415},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tt.body))
			ct := tt.contentType
			if ct == "" {
				ct = "application/json"
			}
			r.Header.Set("Content-Type", ct)
			var v body
			p := Decode(httptest.NewRecorder(), r, &v, tt.max)
			if p == nil {
				t.Fatalf("accepted %q", tt.body)
			}
			if p.Status != tt.wantStatus {
				t.Fatalf("status %d, want %d (%s)", p.Status, tt.wantStatus, p.Detail)
			}
			if tt.wantField != "" && (len(p.Errors) != 1 || p.Errors[0].Field != tt.wantField) {
				t.Fatalf("field errors %+v, want %s", p.Errors, tt.wantField)
			}
		})
	}
}

func TestDecode_AcceptsOneObject(t *testing.T) {
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(`{"email":"a@b.co","count":2}`+"\n"))
	r.Header.Set("Content-Type", "application/json; charset=utf-8")
	var v body
	if p := Decode(httptest.NewRecorder(), r, &v, 0); p != nil {
		t.Fatal(p)
	}
	if v.Email != "a@b.co" || v.Count != 2 {
		t.Fatalf("decoded %+v", v)
	}
}

func TestWriteProblem_IsRFC9457WithCorrelationID(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/api/things/1", nil)
	r = r.WithContext(telemetry.WithCorrelationID(r.Context(), "corr-1"))
	rec := httptest.NewRecorder()
	Error(rec, r, http.StatusNotFound, "no such thing")

	if ct := rec.Header().Get("Content-Type"); ct != ProblemContentType {
		t.Fatalf("content type %q", ct)
	}
	var p Problem
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	want := Problem{Type: "about:blank", Title: "Not Found", Status: 404, Detail: "no such thing", Instance: "/api/things/1", CorrelationID: "corr-1"}
	if rec.Code != 404 || p.Type != want.Type || p.Title != want.Title || p.Status != want.Status ||
		p.Detail != want.Detail || p.Instance != want.Instance || p.CorrelationID != want.CorrelationID {
		t.Fatalf("got %d %+v", rec.Code, p)
	}
}

func TestCorrelate_EchoesOrGenerates(t *testing.T) {
	var seen string
	h := Correlate(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		seen = telemetry.CorrelationID(r.Context())
	}))
	for _, tt := range []struct{ name, sent string }{
		{"echoed", "abc-123"},
		{"generated", ""},
		{"unsafe replaced", "evil\x01id"},
		{"too long replaced", strings.Repeat("x", 200)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			if tt.sent != "" {
				r.Header.Set(telemetry.CorrelationHeader, tt.sent)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			got := rec.Header().Get(telemetry.CorrelationHeader)
			if got == "" || got != seen {
				t.Fatalf("response id %q, handler saw %q", got, seen)
			}
			if tt.name == "echoed" && got != tt.sent {
				t.Fatalf("want %q echoed, got %q", tt.sent, got)
			}
			if tt.name != "echoed" && got == tt.sent {
				t.Fatalf("kept %q", got)
			}
		})
	}
}

func TestRecover_AnswersProblem(t *testing.T) {
	h := Recover(slog.New(slog.DiscardHandler))(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic("bug")
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.Code != 500 || rec.Header().Get("Content-Type") != ProblemContentType {
		t.Fatalf("got %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
}

func TestCallerOf(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	if _, ok := CallerOf(r); ok {
		t.Fatal("anonymous request has a caller")
	}
	r.Header.Set(SubjectHeader, "c1")
	r.Header.Set(RolesHeader, "customer,admin")
	c, ok := CallerOf(r)
	if !ok || c.Subject != "c1" || !c.HasRole("admin") || c.HasRole("root") {
		t.Fatalf("caller %+v", c)
	}
}

package web

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

func TestTrace_ContinuesTheCallersTraceWithAServerSpan(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	var inside trace.SpanContext
	h := Trace(tp)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inside = trace.SpanContextFromContext(r.Context())
		if r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusBadGateway)
		}
	}))

	for _, tc := range []struct {
		path   string
		status int
		code   codes.Code
	}{
		{"/api/orders", http.StatusOK, codes.Unset},
		{"/fail", http.StatusBadGateway, codes.Error},
	} {
		req := httptest.NewRequest("POST", tc.path, nil)
		req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		h.ServeHTTP(httptest.NewRecorder(), req)

		ended := spans.Ended()
		sp := ended[len(ended)-1]
		if got, want := sp.Name(), "POST "+tc.path; got != want {
			t.Errorf("span name %q, want %q", got, want)
		}
		if sp.SpanKind() != trace.SpanKindServer {
			t.Errorf("span kind %v, want server", sp.SpanKind())
		}
		if got := sp.SpanContext().TraceID().String(); got != "4bf92f3577b34da6a3ce929d0e0e4736" {
			t.Errorf("trace %s: the caller's trace was not continued", got)
		}
		if got := sp.Parent().SpanID().String(); got != "00f067aa0ba902b7" {
			t.Errorf("parent %s, want the caller's span", got)
		}
		if inside.SpanID() != sp.SpanContext().SpanID() {
			t.Error("the handler does not run in the server span")
		}
		if !hasAttr(sp.Attributes(), attribute.Int("http.response.status_code", tc.status)) ||
			!hasAttr(sp.Attributes(), attribute.String("http.request.method", "POST")) {
			t.Errorf("attributes %v lack the method or status %d", sp.Attributes(), tc.status)
		}
		if sp.Status().Code != tc.code {
			t.Errorf("span status %v, want %v", sp.Status().Code, tc.code)
		}
	}
}

func TestTrace_PassesTheRequestOnWhenNothingRecords(t *testing.T) {
	called := false
	h := Trace(noop.NewTracerProvider())(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		called = true
		if _, ok := w.(*httptest.ResponseRecorder); !ok {
			t.Errorf("the writer was wrapped (%T) for a span that records nothing", w)
		}
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	if !called {
		t.Fatal("the handler did not run")
	}
}

func hasAttr(attrs []attribute.KeyValue, want attribute.KeyValue) bool {
	for _, a := range attrs {
		if a == want {
			return true
		}
	}
	return false
}

package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"go.opentelemetry.io/otel/propagation"
)

func TestLogger_AddsServiceTraceAndCorrelationIDs(t *testing.T) {
	var buf bytes.Buffer
	log := NewLogger(&buf, "inventory", slog.LevelInfo)
	tp := NewTracerProvider("inventory")
	ctx, span := tp.Tracer("test").Start(context.Background(), "work")
	defer span.End()
	ctx = WithCorrelationID(ctx, "corr-7")

	log.InfoContext(ctx, "reserved", "order_id", "o1")
	log.Debug("below the level")

	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("one JSON record expected, got %q: %v", buf.String(), err)
	}
	want := map[string]string{
		"service":        "inventory",
		"msg":            "reserved",
		"order_id":       "o1",
		"correlation_id": "corr-7",
		"trace_id":       span.SpanContext().TraceID().String(),
		"span_id":        span.SpanContext().SpanID().String(),
	}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("%s = %v, want %q", k, rec[k], v)
		}
	}
}

func TestLogger_WithoutContextIDsAddsNone(t *testing.T) {
	var buf bytes.Buffer
	NewLogger(&buf, "gateway", slog.LevelInfo).With("k", "v").InfoContext(context.Background(), "hello")
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"trace_id", "span_id", "correlation_id"} {
		if _, ok := rec[k]; ok {
			t.Errorf("%s present without a span or correlation id", k)
		}
	}
	if rec["k"] != "v" || rec["service"] != "gateway" {
		t.Fatalf("record %v", rec)
	}
}

func TestPropagator_CarriesW3CTraceContext(t *testing.T) {
	tp := NewTracerProvider("a")
	ctx, span := tp.Tracer("test").Start(context.Background(), "send")
	defer span.End()
	carrier := propagation.MapCarrier{}
	Propagator().Inject(ctx, carrier)
	if carrier["traceparent"] == "" {
		t.Fatal("no traceparent injected")
	}
	got := Propagator().Extract(context.Background(), carrier)
	_, child := NewTracerProvider("b").Tracer("test").Start(got, "receive")
	if child.SpanContext().TraceID() != span.SpanContext().TraceID() {
		t.Fatal("trace id lost across the carrier")
	}
}

func TestEnsureCorrelationID(t *testing.T) {
	ctx := EnsureCorrelationID(context.Background())
	id := CorrelationID(ctx)
	if id == "" {
		t.Fatal("no id")
	}
	if CorrelationID(EnsureCorrelationID(ctx)) != id {
		t.Fatal("an existing id was replaced")
	}
}

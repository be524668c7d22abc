// Package telemetry gives every service the same observability plumbing:
// structured JSON logs enriched with trace and correlation ids, and an
// OpenTelemetry tracer provider with W3C trace-context propagation.
//
// Nothing here is global: each service builds its own logger and tracer
// provider and hands them to the adapters that need them.
package telemetry

import (
	"context"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
)

// CorrelationHeader carries the correlation id across HTTP, RPC and messages.
const CorrelationHeader = "X-Correlation-ID"

type correlationKey struct{}

// WithCorrelationID returns a context that carries id.
func WithCorrelationID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, correlationKey{}, id)
}

// CorrelationID returns the correlation id carried by ctx, or "".
func CorrelationID(ctx context.Context) string {
	id, _ := ctx.Value(correlationKey{}).(string)
	return id
}

// NewCorrelationID returns a fresh id (a UUIDv7, so ids sort by time).
func NewCorrelationID() string {
	return uuid.Must(uuid.NewV7()).String()
}

// EnsureCorrelationID returns ctx unchanged when it carries a correlation id,
// or a context carrying a new one.
func EnsureCorrelationID(ctx context.Context) context.Context {
	if CorrelationID(ctx) != "" {
		return ctx
	}
	return WithCorrelationID(ctx, NewCorrelationID())
}

// Propagator is the W3C trace-context and baggage propagator used on every hop.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// NewTracerProvider returns a tracer provider that names spans after service.
// Extra options add exporters or span processors (tests add a recorder).
func NewTracerProvider(service string, opts ...sdktrace.TracerProviderOption) *sdktrace.TracerProvider {
	res := resource.NewSchemaless(semconv.ServiceName(service))
	return sdktrace.NewTracerProvider(append([]sdktrace.TracerProviderOption{sdktrace.WithResource(res)}, opts...)...)
}

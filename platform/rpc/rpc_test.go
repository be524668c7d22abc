package rpc

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"connectrpc.com/connect"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/mercato-shop/mercato/platform/telemetry"
)

const echoProcedure = "/test.v1.EchoService/Echo"

type seen struct {
	traceID       trace.TraceID
	correlationID string
	deadline      time.Duration
}

// startEcho serves an echo procedure that records what its context carried.
func startEcho(t *testing.T, tp trace.TracerProvider, got chan<- seen) string {
	t.Helper()
	opts, err := HandlerOptions(tp)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(echoProcedure, connect.NewUnaryHandler(echoProcedure,
		func(ctx context.Context, req *connect.Request[wrapperspb.StringValue]) (*connect.Response[wrapperspb.StringValue], error) {
			s := seen{traceID: trace.SpanContextFromContext(ctx).TraceID(), correlationID: telemetry.CorrelationID(ctx)}
			if d, ok := ctx.Deadline(); ok {
				s.deadline = time.Until(d)
			}
			got <- s
			return connect.NewResponse(req.Msg), nil
		}, opts...))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

func newClient(t *testing.T, tp trace.TracerProvider, url string, timeout time.Duration) *connect.Client[wrapperspb.StringValue, wrapperspb.StringValue] {
	t.Helper()
	opts, err := ClientOptions(tp, timeout)
	if err != nil {
		t.Fatal(err)
	}
	return connect.NewClient[wrapperspb.StringValue, wrapperspb.StringValue](NewHTTPClient(http.DefaultTransport), url+echoProcedure, opts...)
}

func TestCall_CarriesTraceAndCorrelation(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	server := telemetry.NewTracerProvider("server", sdktrace.WithSpanProcessor(rec))
	client := telemetry.NewTracerProvider("client", sdktrace.WithSpanProcessor(rec))
	got := make(chan seen, 1)
	url := startEcho(t, server, got)

	ctx, span := client.Tracer("test").Start(context.Background(), "caller")
	ctx = telemetry.WithCorrelationID(ctx, "corr-42")
	if _, err := newClient(t, client, url, 0).CallUnary(ctx, connect.NewRequest(wrapperspb.String("hi"))); err != nil {
		t.Fatal(err)
	}
	span.End()

	s := <-got
	if s.traceID != span.SpanContext().TraceID() {
		t.Fatalf("server trace %s, caller trace %s", s.traceID, span.SpanContext().TraceID())
	}
	if s.correlationID != "corr-42" {
		t.Fatalf("server correlation id %q", s.correlationID)
	}
	// The server span is a child of the client span, which is a child of the caller.
	var clientSpan, serverSpan sdktrace.ReadOnlySpan
	for _, sp := range rec.Ended() {
		switch sp.SpanKind() {
		case trace.SpanKindClient:
			clientSpan = sp
		case trace.SpanKindServer:
			serverSpan = sp
		}
	}
	if clientSpan == nil || serverSpan == nil {
		t.Fatalf("spans: %d ended, want a client and a server span", len(rec.Ended()))
	}
	if clientSpan.Parent().SpanID() != span.SpanContext().SpanID() || serverSpan.Parent().SpanID() != clientSpan.SpanContext().SpanID() {
		t.Fatal("spans are not linked caller -> client -> server")
	}
}

func TestCall_WithoutDeadlineGetsTheDefaultOne(t *testing.T) {
	tp := telemetry.NewTracerProvider("t")
	got := make(chan seen, 2)
	url := startEcho(t, tp, got)
	c := newClient(t, tp, url, 3*time.Second)

	if _, err := c.CallUnary(context.Background(), connect.NewRequest(wrapperspb.String("x"))); err != nil {
		t.Fatal(err)
	}
	s := <-got
	if s.deadline <= 0 || s.deadline > 3*time.Second {
		t.Fatalf("server saw deadline %v, want within the 3s default", s.deadline)
	}
	if s.correlationID == "" {
		t.Fatal("a call without a correlation id must get one on the server")
	}
	// A caller's own, tighter deadline travels instead.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := c.CallUnary(ctx, connect.NewRequest(wrapperspb.String("x"))); err != nil {
		t.Fatal(err)
	}
	if s := <-got; s.deadline <= 0 || s.deadline > 500*time.Millisecond {
		t.Fatalf("server saw deadline %v, want the caller's 500ms", s.deadline)
	}
}

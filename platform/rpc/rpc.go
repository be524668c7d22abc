// Package rpc configures Connect (connectrpc.com/connect) servers and clients
// the same way in every service: trace context and correlation ids cross each
// call, and every call has a deadline that travels with it.
package rpc

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/otelconnect"
	"go.opentelemetry.io/otel/trace"

	"github.com/mercato-shop/mercato/platform/telemetry"
)

// DefaultTimeout bounds a call whose context has no deadline of its own.
const DefaultTimeout = 5 * time.Second

// HandlerOptions are the options of every Connect handler.
func HandlerOptions(tp trace.TracerProvider) ([]connect.HandlerOption, error) {
	otel, err := tracing(tp)
	if err != nil {
		return nil, err
	}
	return []connect.HandlerOption{connect.WithInterceptors(otel, serverCorrelation())}, nil
}

// ClientOptions are the options of every Connect client. A call made without
// a deadline gets timeout (DefaultTimeout when zero); Connect sends the
// deadline to the server, which sees it on its context.
func ClientOptions(tp trace.TracerProvider, timeout time.Duration) ([]connect.ClientOption, error) {
	otel, err := tracing(tp)
	if err != nil {
		return nil, err
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return []connect.ClientOption{connect.WithInterceptors(deadline(timeout), otel, clientCorrelation())}, nil
}

// NewHTTPClient returns the HTTP client Connect clients send through.
// transport is usually discovery.Transport, which resolves service names.
func NewHTTPClient(transport http.RoundTripper) *http.Client {
	return &http.Client{Transport: transport}
}

func tracing(tp trace.TracerProvider) (*otelconnect.Interceptor, error) {
	i, err := otelconnect.NewInterceptor(
		otelconnect.WithTracerProvider(tp),
		otelconnect.WithPropagator(telemetry.Propagator()),
		// Calls between mercato's own services continue the caller's trace.
		otelconnect.WithTrustRemote(),
		otelconnect.WithoutMetrics(),
	)
	if err != nil {
		return nil, fmt.Errorf("rpc tracing interceptor: %w", err)
	}
	return i, nil
}

func deadline(timeout time.Duration) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if _, ok := ctx.Deadline(); !ok {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			return next(ctx, req)
		}
	}
}

func clientCorrelation() connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if id := telemetry.CorrelationID(ctx); id != "" {
				req.Header().Set(telemetry.CorrelationHeader, id)
			}
			return next(ctx, req)
		}
	}
}

func serverCorrelation() connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if id := req.Header().Get(telemetry.CorrelationHeader); id != "" {
				ctx = telemetry.WithCorrelationID(ctx, id)
			}
			return next(telemetry.EnsureCorrelationID(ctx), req)
		}
	}
}

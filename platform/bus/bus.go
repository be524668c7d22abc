// Package bus is the messaging layer: events and commands travel over NATS
// JetStream as protobuf payloads with CloudEvents attributes in the headers,
// W3C trace context and a correlation id, so a trace and a log search follow
// a message from publisher to consumer.
//
// The same client talks to an external cluster or to the server that
// StartServer embeds in the process. Streams and durable consumers are
// declared in code (EnsureStream, Subscribe), never set up by hand.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

const instrumentation = "github.com/mercato-shop/mercato/platform/bus"

// Config configures a connection to the broker.
type Config struct {
	URL string
	// Source names the service: it is the ce-source of what it publishes and
	// the NATS connection name.
	Source string
	// Logger defaults to a logger that discards.
	Logger *slog.Logger
	// Tracer defaults to a no-op provider.
	Tracer trace.TracerProvider
}

// publishAckTimeout bounds the wait for the broker's ack of an async publish.
const publishAckTimeout = 5 * time.Second

// Bus is a connection to the broker. It is safe for concurrent use.
type Bus struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	source string
	log    *slog.Logger
	tracer trace.Tracer
	closed chan struct{}
}

// Connect connects to cfg.URL. Once connected it reconnects without limit,
// so a broker restart is survived; publishes made meanwhile wait in the
// client's reconnect buffer. When ctx has a deadline it bounds the dial.
func Connect(ctx context.Context, cfg Config) (*Bus, error) {
	if cfg.URL == "" || cfg.Source == "" {
		return nil, errors.New("connect to nats: URL and Source are required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tp := cfg.Tracer
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	b := &Bus{
		source: cfg.Source,
		log:    log.With("component", "bus"),
		tracer: tp.Tracer(instrumentation),
		closed: make(chan struct{}),
	}
	opts := []nats.Option{
		nats.Name(cfg.Source),
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: our own Close
				b.log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			b.log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			b.log.Warn("nats async error", "err", err)
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(b.closed) }),
	}
	if deadline, ok := ctx.Deadline(); ok {
		opts = append(opts, nats.Timeout(time.Until(deadline)))
	}
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", cfg.URL, err)
	}
	if err := ctx.Err(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("connect to nats %s: %w", cfg.URL, err)
	}
	// An async publish whose ack is lost (the connection dropped after the
	// message left) would otherwise wait forever, and with it the outbox
	// relay; timed out, it is sent again and the stream drops the repeat.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(publishAckTimeout))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream on %s: %w", cfg.URL, err)
	}
	b.nc, b.js = nc, js
	return b, nil
}

// JetStream gives access to the JetStream API for what this package does not wrap.
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

// Conn gives access to the core NATS connection.
func (b *Bus) Conn() *nats.Conn { return b.nc }

// Ready reports whether the connection is up, for a readiness probe.
func (b *Bus) Ready(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if st := b.nc.Status(); st != nats.CONNECTED {
		return fmt.Errorf("nats connection %s", st)
	}
	return nil
}

// Close drains the connection: pending publishes are flushed and
// subscriptions stop, then it closes. Stop subscriptions first so their
// handlers finish and ack before the connection goes.
func (b *Bus) Close() {
	// Drain fails only when the connection is already closed or draining;
	// either way it ends in the closed handler.
	_ = b.nc.Drain()
	<-b.closed
}

// Stream declares a JetStream stream.
type Stream struct {
	Name     string
	Subjects []string
	// WorkQueue retains a message until one consumer acks it (each message
	// is handled once); otherwise messages are kept by limits and every
	// durable consumer sees all of them.
	WorkQueue bool
	// MaxAge drops older messages; 0 keeps them.
	MaxAge time.Duration
	// Duplicates is the window in which a repeated Nats-Msg-Id (the event
	// id) is dropped by the broker; 0 takes the server default (2 minutes).
	Duplicates time.Duration
}

// EnsureStream creates the stream or updates it to s. It is idempotent, so
// every service declares the streams it needs at start-up.
func (b *Bus) EnsureStream(ctx context.Context, s Stream) error {
	retention := jetstream.LimitsPolicy
	if s.WorkQueue {
		retention = jetstream.WorkQueuePolicy
	}
	_, err := b.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:       s.Name,
		Subjects:   s.Subjects,
		Retention:  retention,
		Storage:    jetstream.FileStorage,
		MaxAge:     s.MaxAge,
		Duplicates: s.Duplicates,
	})
	if err != nil {
		return fmt.Errorf("ensure stream %s: %w", s.Name, err)
	}
	return nil
}

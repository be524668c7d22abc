package bus

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/mercato-shop/mercato/platform/telemetry"
)

// Envelope is an event encoded for the wire: the NATS subject, the headers
// (CloudEvents attributes, trace context, correlation id, Nats-Msg-Id) and
// the payload. A transactional outbox stores envelopes and sends them later,
// so the headers are those of the moment the event was written.
type Envelope struct {
	// ID is the event id: ce-id and Nats-Msg-Id, which the broker dedupes on.
	ID      string
	Subject string
	Header  nats.Header
	Data    []byte
}

// Encode encodes ev as Publish would, without sending it: ID and Time are
// defaulted, and a "publish <type>" producer span is started and ended here,
// so the consumer's span becomes its child whenever the envelope is sent.
func (b *Bus) Encode(ctx context.Context, ev Event) (Envelope, error) {
	_, env, span, err := b.encode(ctx, "encode", ev)
	if err != nil {
		return Envelope{}, err
	}
	span.End()
	return env, nil
}

// PublishEnvelope publishes env to JetStream with Nats-Msg-Id = env.ID and
// waits for the broker's ack. Sending the same envelope again (a retry, a
// relay that restarted) is dropped by the broker inside the stream's
// Duplicates window.
func (b *Bus) PublishEnvelope(ctx context.Context, env Envelope) error {
	if env.ID == "" || env.Subject == "" {
		return errors.New("publish envelope: ID and Subject are required")
	}
	h := env.Header
	if h.Get(jetstream.MsgIDHeader) != env.ID {
		// Copied: the caller's envelope may be shared or sent again.
		h = maps.Clone(h)
		if h == nil {
			h = nats.Header{}
		}
		h.Set(jetstream.MsgIDHeader, env.ID)
	}
	msg := &nats.Msg{Subject: env.Subject, Header: h, Data: env.Data}
	if _, err := b.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("publish %s %s: %w", env.Subject, env.ID, err)
	}
	return nil
}

// PublishEnvelopes publishes envs pipelined: all are sent at once, in
// order on one connection, then their acks awaited in order. It returns how
// many leading envelopes the broker acknowledged, and the error that
// stopped the count. A failure leaves the envelopes after it in an unknown
// state (some may be stored): send them again, and the broker's dedupe on
// their ids drops the copies. Only then can a later envelope be stored
// before an earlier one.
func (b *Bus) PublishEnvelopes(ctx context.Context, envs []Envelope) (int, error) {
	futures := make([]jetstream.PubAckFuture, 0, len(envs))
	var sendErr error
	for _, env := range envs {
		if env.ID == "" || env.Subject == "" {
			sendErr = errors.New("publish envelope: ID and Subject are required")
			break
		}
		h := maps.Clone(env.Header)
		if h == nil {
			h = nats.Header{}
		}
		h.Set(jetstream.MsgIDHeader, env.ID)
		f, err := b.js.PublishMsgAsync(&nats.Msg{Subject: env.Subject, Header: h, Data: env.Data})
		if err != nil {
			sendErr = fmt.Errorf("publish %s %s: %w", env.Subject, env.ID, err)
			break
		}
		futures = append(futures, f)
	}
	for i, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return i, fmt.Errorf("publish %s %s: %w", envs[i].Subject, envs[i].ID, err)
		case <-ctx.Done():
			return i, fmt.Errorf("publish %s %s: %w", envs[i].Subject, envs[i].ID, ctx.Err())
		}
	}
	return len(futures), sendErr
}

// encode defaults and marshals ev, then starts its producer span and writes
// the headers under it. The caller ends the span; ctx carries it.
func (b *Bus) encode(ctx context.Context, op string, ev Event) (context.Context, Envelope, trace.Span, error) {
	if ev.Type == "" {
		return ctx, Envelope{}, nil, fmt.Errorf("%s: event has no type", op)
	}
	if ev.ID == "" {
		id, err := uuid.NewV7()
		if err != nil {
			return ctx, Envelope{}, nil, fmt.Errorf("%s %s: new id: %w", op, ev.Type, err)
		}
		ev.ID = id.String()
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	data, err := proto.Marshal(ev.Data)
	if err != nil {
		return ctx, Envelope{}, nil, fmt.Errorf("%s %s %s: marshal: %w", op, ev.Type, ev.ID, err)
	}

	ctx, span := b.tracer.Start(ctx, "publish "+ev.Type,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(messagingAttrs(ev.Type, ev.ID, semconv.MessagingOperationTypePublish)...))

	h := make(nats.Header, 12)
	h.Set(HeaderSpecVersion, specVersion)
	h.Set(HeaderID, ev.ID)
	h.Set(HeaderType, ev.Type)
	h.Set(HeaderSource, b.source)
	h.Set(HeaderTime, ev.Time.UTC().Format(time.RFC3339Nano))
	if ev.Subject != "" {
		h.Set(HeaderSubject, ev.Subject)
	}
	h.Set(HeaderContentType, contentType)
	if id := telemetry.CorrelationID(ctx); id != "" {
		h.Set(telemetry.CorrelationHeader, id)
	}
	telemetry.Propagator().Inject(ctx, headerCarrier(h))
	// Nats-Msg-Id = event id: a retried publish (outbox relay, crash and
	// restart) is dropped by the broker inside the Duplicates window.
	h.Set(jetstream.MsgIDHeader, ev.ID)

	return ctx, Envelope{ID: ev.ID, Subject: ev.Type, Header: h, Data: data}, span, nil
}

package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/mercato-shop/mercato/platform/telemetry"
)

// CloudEvents attributes, carried as NATS headers.
const (
	HeaderSpecVersion = "ce-specversion"
	HeaderID          = "ce-id"
	HeaderType        = "ce-type"
	HeaderSource      = "ce-source"
	HeaderTime        = "ce-time"
	HeaderSubject     = "ce-subject"
	HeaderContentType = "content-type"

	specVersion = "1.0"
	contentType = "application/protobuf"
)

// Event is one message.
type Event struct {
	// ID is the ce-id and the Nats-Msg-Id the broker dedupes on; it
	// defaults to a new UUIDv7. Reuse it when retrying a publish.
	ID string
	// Type is both the ce-type and the NATS subject: "inventory.reserved",
	// "inventory.cmd.reserve".
	Type string
	// Subject is the ce-subject: the id of the entity the event is about.
	Subject string
	// Time defaults to now; it is sent in UTC.
	Time time.Time
	Data proto.Message
}

// Publish publishes ev to JetStream and waits for the broker's ack. The trace
// context of a "publish <type>" producer span and the correlation id of ctx
// travel in the headers.
func (b *Bus) Publish(ctx context.Context, ev Event) error {
	if ev.Type == "" {
		return errors.New("publish: event has no type")
	}
	if ev.ID == "" {
		id, err := uuid.NewV7()
		if err != nil {
			return fmt.Errorf("publish %s: new id: %w", ev.Type, err)
		}
		ev.ID = id.String()
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	data, err := proto.Marshal(ev.Data)
	if err != nil {
		return fmt.Errorf("publish %s %s: marshal: %w", ev.Type, ev.ID, err)
	}

	ctx, span := b.tracer.Start(ctx, "publish "+ev.Type,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(messagingAttrs(ev.Type, ev.ID, semconv.MessagingOperationTypePublish)...))
	defer span.End()

	msg := nats.NewMsg(ev.Type)
	msg.Data = data
	h := msg.Header
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
	if _, err := b.js.PublishMsg(ctx, msg, jetstream.WithMsgID(ev.ID)); err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		return fmt.Errorf("publish %s %s: %w", ev.Type, ev.ID, err)
	}
	return nil
}

func messagingAttrs(typ, id string, op attribute.KeyValue) []attribute.KeyValue {
	return []attribute.KeyValue{
		semconv.MessagingSystemKey.String("nats"),
		semconv.MessagingDestinationName(typ),
		semconv.MessagingMessageID(id),
		op,
	}
}

// headerCarrier adapts nats.Header, whose keys are case-sensitive, to the
// propagator; propagation.HeaderCarrier would canonicalise "traceparent".
type headerCarrier nats.Header

func (c headerCarrier) Get(key string) string { return nats.Header(c).Get(key) }
func (c headerCarrier) Set(key, value string) { nats.Header(c).Set(key, value) }

func (c headerCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

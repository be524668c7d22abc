package bus

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"google.golang.org/protobuf/proto"
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
// travel in the headers. It is Encode and PublishEnvelope in one, under one
// span that also records a failed send.
func (b *Bus) Publish(ctx context.Context, ev Event) error {
	ctx, env, span, err := b.encode(ctx, "publish", ev)
	if err != nil {
		return err
	}
	defer span.End()
	if err := b.PublishEnvelope(ctx, env); err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		return err
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

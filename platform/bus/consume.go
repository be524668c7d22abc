package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/mercato-shop/mercato/platform/telemetry"
)

// ErrPoison marks a message that can never be handled (it does not decode,
// or it breaks an invariant for good). A handler error wrapping it
// terminates the message instead of retrying it.
var ErrPoison = errors.New("poison message")

// Message is what a handler sees about a delivery.
type Message struct {
	ID, Type, Source, Subject string
	Time                      time.Time
	// Delivered counts delivery attempts, from 1.
	Delivered uint64
	Header    nats.Header
}

// Handler handles one delivery; data is the raw payload.
type Handler func(ctx context.Context, m Message, data []byte) error

// Handlers routes deliveries by event type (ce-type).
type Handlers map[string]Handler

// On adapts a typed handler: the payload is decoded into a new T, and a
// payload that does not decode is reported as ErrPoison.
func On[T any, PT interface {
	*T
	proto.Message
}](h func(ctx context.Context, m Message, ev PT) error) Handler {
	return func(ctx context.Context, m Message, data []byte) error {
		ev := PT(new(T))
		if err := proto.Unmarshal(data, ev); err != nil {
			return fmt.Errorf("decode %s %s: %w: %w", m.Type, m.ID, ErrPoison, err)
		}
		return h(ctx, m, ev)
	}
}

// Consumer declares a durable consumer.
type Consumer struct {
	Stream string
	// Durable is the consumer's name on the broker. It is a stable API:
	// renaming it starts a new consumer from the start of the stream.
	Durable string
	// Subjects filters the stream; empty means all of it. More than one
	// subject needs NATS 2.10 or later.
	Subjects []string
	// AckWait is how long a delivery may take before the broker redelivers
	// it; it is also the deadline of the handler's ctx. Default 30s.
	AckWait time.Duration
	// MaxDeliver bounds delivery attempts. Default -1, unbounded; with a
	// DeadLetter stream, DefaultMaxDeliver.
	MaxDeliver int
	// Backoff is the redelivery delay after a failed attempt, indexed by
	// attempt (the last entry repeats). By default it grows exponentially,
	// with jitter, from 100ms to 30s.
	Backoff []time.Duration
	// DeadLetter names a stream declared with DeadLetterStream. A poison
	// message, and one whose last allowed delivery failed, is copied there
	// with the reason and then removed from the consumer's stream, so it
	// neither blocks the queue nor is lost. Empty: a poison message is
	// dropped and a failing one is retried up to MaxDeliver.
	DeadLetter string
	// MaxInFlight bounds the deliveries handled at once. Default 256.
	MaxInFlight int
}

func (c Consumer) withDefaults() Consumer {
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = -1
		if c.DeadLetter != "" {
			c.MaxDeliver = DefaultMaxDeliver
		}
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 256
	}
	return c
}

// Default redelivery delays: the first retry after about backoffMin, each
// next one about twice as late, none later than backoffMax.
const (
	backoffMin = 100 * time.Millisecond
	backoffMax = 30 * time.Second
)

// backoff is the delay before redelivering a message whose delivered-th
// attempt failed.
func (c Consumer) backoff(delivered uint64) time.Duration {
	n := max(delivered, 1)
	if len(c.Backoff) > 0 {
		return c.Backoff[min(n, uint64(len(c.Backoff)))-1]
	}
	// Exponential backoff with equal jitter: instances that failed on the
	// same outage spread their retries instead of returning in step.
	d := min(backoffMin<<min(n-1, 20), backoffMax)
	return d/2 + rand.N(d/2)
}

// exhausted reports whether a delivery was the last one MaxDeliver allows.
func (c Consumer) exhausted(delivered uint64) bool {
	return c.MaxDeliver > 0 && delivered >= uint64(c.MaxDeliver)
}

// Subscription is a running consumer.
type Subscription struct {
	cc       jetstream.ConsumeContext
	inFlight sync.WaitGroup
	stopOnce sync.Once
}

// Subscribe creates or updates the durable consumer c and handles its
// messages with hs until Stop. ctx bounds the set-up, including the wait for
// a stream not declared yet; handlers get a context with ctx's values (not
// its cancellation), the message's trace and correlation id, and a deadline
// of AckWait.
//
// Handlers run concurrently, up to MaxInFlight at once, so deliveries are not
// handled in stream order and a handler must be safe for concurrent use.
//
// Outcome of a delivery: nil acks it. An error wrapping ErrPoison, a message
// without ce-type or with a type hs does not handle is poison: it is never
// retried. Any other error is retried after Backoff, up to MaxDeliver
// attempts. With a DeadLetter stream, a poison message and one that failed
// its last attempt are dead-lettered (see Consumer.DeadLetter); without one,
// poison is terminated and the last failure is left to the broker's limit.
// Failures are logged, as errors when the message is given up.
func (b *Bus) Subscribe(ctx context.Context, c Consumer, hs Handlers) (*Subscription, error) {
	if c.Stream == "" || c.Durable == "" {
		return nil, errors.New("subscribe: Stream and Durable are required")
	}
	if len(hs) == 0 {
		return nil, fmt.Errorf("subscribe %s/%s: no handlers", c.Stream, c.Durable)
	}
	c = c.withDefaults()
	maxDeliver := c.MaxDeliver
	if c.DeadLetter != "" {
		// The dispatcher enforces the bound: the broker's would stop
		// redelivering a message whose dead-lettering failed, stranding it.
		maxDeliver = -1
		if _, err := b.js.Stream(ctx, c.DeadLetter); err != nil {
			return nil, fmt.Errorf("subscribe %s/%s: dead-letter stream %s: %w", c.Stream, c.Durable, c.DeadLetter, err)
		}
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       c.Durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		MaxDeliver:    maxDeliver,
		MaxAckPending: c.MaxInFlight,
	}
	if len(c.Subjects) == 1 {
		cfg.FilterSubject = c.Subjects[0]
	} else {
		cfg.FilterSubjects = c.Subjects
	}
	cons, err := b.createConsumer(ctx, c.Stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s/%s: %w", c.Stream, c.Durable, err)
	}

	d := &dispatcher{
		bus:      b,
		consumer: c,
		handlers: hs,
		base:     context.WithoutCancel(ctx),
		log:      b.log.With("stream", c.Stream, "consumer", c.Durable),
	}
	s := &Subscription{}
	slots := make(chan struct{}, c.MaxInFlight)
	// The callback runs on one goroutine per subscription; each delivery is
	// handed to its own goroutine so a slow handler does not hold up others.
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		slots <- struct{}{}
		s.inFlight.Add(1)
		go func() {
			defer func() { <-slots; s.inFlight.Done() }()
			d.deliver(msg)
		}()
	},
		jetstream.PullMaxMessages(c.MaxInFlight),
		// Short pull requests: after a broker restart the lost request is
		// noticed (missed heartbeats, half of this) and renewed in seconds.
		jetstream.PullExpiry(5*time.Second),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			d.log.Warn("consume", "err", err)
		}))
	if err != nil {
		return nil, fmt.Errorf("subscribe %s/%s: consume: %w", c.Stream, c.Durable, err)
	}
	s.cc = cc
	return s, nil
}

// createConsumer waits for a stream that does not exist yet: its owner
// declares it when it starts, and services may start in any order.
func (b *Bus) createConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	return awaitStream(ctx, b, stream, func() (jetstream.Consumer, error) {
		return b.js.CreateOrUpdateConsumer(ctx, stream, cfg)
	})
}

// awaitStream calls create until it stops failing for want of stream,
// which its owner declares when it starts, or until ctx ends.
func awaitStream[C any](ctx context.Context, b *Bus, stream string, create func() (C, error)) (C, error) {
	for waited := false; ; waited = true {
		c, err := create()
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return c, err
		}
		if !waited {
			b.log.InfoContext(ctx, "waiting for the stream's owner to declare it", "stream", stream)
		}
		select {
		case <-ctx.Done():
			var zero C
			return zero, fmt.Errorf("%w: %w", err, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Stop stops intake and returns once the deliveries already received have
// been handled and acked. It is safe to call more than once.
func (s *Subscription) Stop() {
	s.stopOnce.Do(func() {
		s.cc.Drain()
		<-s.cc.Closed()
		s.inFlight.Wait()
	})
}

// dispatcher turns deliveries of one subscription into handler calls.
type dispatcher struct {
	bus      *Bus
	consumer Consumer
	handlers Handlers
	base     context.Context
	log      *slog.Logger
}

func (d *dispatcher) deliver(msg jetstream.Msg) {
	h := msg.Headers()
	m := Message{
		ID:      h.Get(HeaderID),
		Type:    h.Get(HeaderType),
		Source:  h.Get(HeaderSource),
		Subject: h.Get(HeaderSubject),
		Header:  h,
	}
	m.Time, _ = time.Parse(time.RFC3339Nano, h.Get(HeaderTime)) // zero when absent
	if meta, err := msg.Metadata(); err == nil {
		m.Delivered = meta.NumDelivered
	}

	ctx := telemetry.Propagator().Extract(d.base, headerCarrier(h))
	if id := h.Get(telemetry.CorrelationHeader); id != "" {
		ctx = telemetry.WithCorrelationID(ctx, id)
	}
	name := m.Type
	if name == "" {
		name = msg.Subject()
	}
	ctx, span := d.bus.tracer.Start(ctx, "process "+name,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(messagingAttrs(msg.Subject(), m.ID, semconv.MessagingOperationTypeDeliver)...))
	defer span.End()
	log := d.log.With("type", m.Type, "id", m.ID, "delivered", m.Delivered)

	start := time.Now()
	err := d.handle(ctx, m, msg.Data())
	if err == nil {
		// Double ack: the broker confirms, so an acked message is not redelivered.
		if err := msg.DoubleAck(ctx); err != nil {
			log.WarnContext(ctx, "ack", "err", err)
			return
		}
		log.DebugContext(ctx, "message handled", "duration", time.Since(start))
		return
	}
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
	poison, exhausted := errors.Is(err, ErrPoison), d.consumer.exhausted(m.Delivered)
	switch {
	case d.consumer.DeadLetter != "" && (poison || exhausted):
		if dlErr := d.deadLetter(ctx, msg, err); dlErr != nil {
			// Never lose it: it comes back and dead-lettering is tried again.
			delay := d.consumer.backoff(m.Delivered)
			log.ErrorContext(ctx, "cannot dead-letter message, will retry", "err", err, "dead_letter_err", dlErr, "retry_in", delay)
			if err := msg.NakWithDelay(delay); err != nil {
				log.WarnContext(ctx, "nak", "err", err)
			}
			return
		}
		log.ErrorContext(ctx, "message dead-lettered", "err", err, "dead_letter", d.consumer.DeadLetter)
		// Plain Term: servers before 2.10 ignore a "+TERM reason" ack.
		if err := msg.Term(); err != nil {
			log.WarnContext(ctx, "term", "err", err)
		}
	case poison:
		log.ErrorContext(ctx, "terminate message", "err", err)
		if err := msg.Term(); err != nil {
			log.WarnContext(ctx, "term", "err", err)
		}
	default:
		delay := d.consumer.backoff(m.Delivered)
		if exhausted {
			log.ErrorContext(ctx, "handler failed on the last allowed delivery", "err", err)
		} else {
			log.WarnContext(ctx, "handler failed, will retry", "err", err, "retry_in", delay)
		}
		if err := msg.NakWithDelay(delay); err != nil {
			log.WarnContext(ctx, "nak", "err", err)
		}
	}
}

// handle routes m to its handler with a deadline of AckWait, after which the
// broker redelivers anyway. A panicking handler is retried like a failed one
// instead of taking the process down.
func (d *dispatcher) handle(ctx context.Context, m Message, data []byte) (err error) {
	if m.Type == "" {
		return fmt.Errorf("message without %s: %w", HeaderType, ErrPoison)
	}
	h, ok := d.handlers[m.Type]
	if !ok {
		return fmt.Errorf("no handler for %s: %w", m.Type, ErrPoison)
	}
	ctx, cancel := context.WithTimeout(ctx, d.consumer.AckWait)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler for %s panicked: %v", m.Type, r)
		}
	}()
	return h(ctx, m, data)
}

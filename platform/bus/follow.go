package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/mercato-shop/mercato/platform/telemetry"
)

// Follow is a reading of a stream in stream order from a given sequence,
// for a reader that keeps its own position: a projection stores the last
// sequence it applied with the rows it changed, and follows the stream again
// from there after a restart or to rebuild from the start. Unlike Subscribe
// there is no durable consumer on the broker and nothing is acked.
type Follow struct {
	Stream string
	// Subjects filters the stream; empty means all of it.
	Subjects []string
	// From is the first stream sequence to read; 0 and 1 both mean the
	// start of the stream.
	From uint64
	// MaxBatch bounds the records handed over at once. Default 256.
	MaxBatch int
}

// Record is one message read by Follow.
type Record struct {
	Message
	// Sequence is the message's position in the stream.
	Sequence uint64
	// Pending counts the messages after this one (matching Subjects) that
	// the stream held when it was read; 0 means the reader had caught up.
	Pending uint64
	Data    []byte
}

// Follow reads f.Stream from f.From, in stream order, and hands the records
// to fn in batches: each batch continues the previous one, and ends at
// MaxBatch records or where nothing more was pending, so a caught-up reader
// gets each new message at once. fn runs on Follow's goroutine and must not
// keep the slice. A stream that is not declared yet is waited for.
//
// Follow returns when ctx ends, with ctx's error, or when fn fails, with
// fn's error wrapped; it reads nothing further then. To go on, the reader
// calls Follow again from the position it has recorded.
//
// Each record gets a consumer span in the trace of the message, ended once
// its batch is handled.
func (b *Bus) Follow(ctx context.Context, f Follow, fn func(ctx context.Context, batch []Record) error) error {
	if f.Stream == "" {
		return errors.New("follow: Stream is required")
	}
	if f.MaxBatch <= 0 {
		f.MaxBatch = 256
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: f.Subjects, DeliverPolicy: jetstream.DeliverAllPolicy}
	if f.From > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, f.From
	}
	cons, err := b.orderedConsumer(ctx, f.Stream, cfg)
	if err != nil {
		return fmt.Errorf("follow %s: %w", f.Stream, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(f.MaxBatch))
	if err != nil {
		return fmt.Errorf("follow %s: %w", f.Stream, err)
	}
	defer func() {
		it.Stop()
		// The broker would drop the idle consumer after minutes; a reader
		// that restarts often (a rebuild, a retry) should not pile them up.
		if info := cons.CachedInfo(); info != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = b.js.DeleteConsumer(dctx, f.Stream, info.Name)
			cancel()
		}
	}()

	for {
		batch := make([]Record, 0, f.MaxBatch)
		for len(batch) == 0 || (batch[len(batch)-1].Pending > 0 && len(batch) < f.MaxBatch) {
			msg, err := it.Next(jetstream.NextContext(ctx))
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("follow %s: %w", f.Stream, err)
			}
			r, err := record(msg)
			if err != nil {
				return fmt.Errorf("follow %s: %w", f.Stream, err)
			}
			batch = append(batch, r)
		}
		if err := b.handleBatch(ctx, batch, fn); err != nil {
			return fmt.Errorf("follow %s from sequence %d: %w", f.Stream, batch[0].Sequence, err)
		}
	}
}

// orderedConsumer creates the consumer, waiting for a stream that its owner
// has not declared yet.
func (b *Bus) orderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	for {
		cons, err := b.js.OrderedConsumer(ctx, stream, cfg)
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return cons, err
		}
		b.log.DebugContext(ctx, "waiting for the stream's owner to declare it", "stream", stream)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func record(msg jetstream.Msg) (Record, error) {
	meta, err := msg.Metadata()
	if err != nil {
		return Record{}, err
	}
	h := msg.Headers()
	r := Record{
		Message: Message{
			ID:        h.Get(HeaderID),
			Type:      h.Get(HeaderType),
			Source:    h.Get(HeaderSource),
			Subject:   h.Get(HeaderSubject),
			Delivered: meta.NumDelivered,
			Header:    h,
		},
		Sequence: meta.Sequence.Stream,
		Pending:  meta.NumPending,
		Data:     msg.Data(),
	}
	r.Time, _ = time.Parse(time.RFC3339Nano, h.Get(HeaderTime)) // zero when absent
	return r, nil
}

func (b *Bus) handleBatch(ctx context.Context, batch []Record, fn func(context.Context, []Record) error) error {
	spans := make([]trace.Span, len(batch))
	for i, r := range batch {
		mctx := telemetry.Propagator().Extract(ctx, headerCarrier(r.Header))
		_, spans[i] = b.tracer.Start(mctx, "process "+r.Type,
			trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(messagingAttrs(r.Type, r.ID, semconv.MessagingOperationTypeDeliver)...))
	}
	err := fn(ctx, batch)
	for _, s := range spans {
		if err != nil {
			s.RecordError(err)
			s.SetStatus(codes.Error, err.Error())
		}
		s.End()
	}
	return err
}

package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
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
	// Linger is how long a batch may wait, after its first record, for
	// more to be published, so that a reader that keeps up still handles
	// several at once (one transaction, say) under a steady flow. 0 hands
	// over what is pending at once.
	Linger time.Duration
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
// MaxBatch records or where nothing more was pending (after Linger), so a
// caught-up reader gets each new message at once (or within Linger). fn runs on Follow's goroutine and must not
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
	// Stopping the iterator also ends a Next that is recreating the
	// consumer (the stream was deleted, say), which ctx alone would not.
	stopOnCancel := context.AfterFunc(ctx, it.Stop)
	defer func() {
		stopOnCancel()
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
		batch, err := f.next(ctx, it)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("follow %s: %w", f.Stream, err)
		}
		if err := b.handleBatch(ctx, batch, fn); err != nil {
			return fmt.Errorf("follow %s from sequence %d: %w", f.Stream, batch[0].Sequence, err)
		}
	}
}

// next reads the next batch: it waits for a first record, then takes what
// is pending, and what comes within Linger of the first, up to MaxBatch.
func (f Follow) next(ctx context.Context, it jetstream.MessagesContext) ([]Record, error) {
	batch := make([]Record, 0, f.MaxBatch)
	var until time.Time // the end of the linger, once started
	for len(batch) < f.MaxBatch {
		wait := jetstream.NextContext(ctx)
		if n := len(batch); n > 0 && batch[n-1].Pending == 0 {
			if f.Linger <= 0 {
				break
			}
			if until.IsZero() {
				until = time.Now().Add(f.Linger)
			}
			left := time.Until(until)
			if left <= 0 {
				break
			}
			// A short wait: ctx is looked at again when it ends.
			wait = jetstream.NextMaxWait(left)
		}
		msg, err := it.Next(wait)
		if errors.Is(err, nats.ErrTimeout) && !until.IsZero() {
			break // nothing more came in time
		}
		if err != nil {
			return nil, err
		}
		r, err := record(msg)
		if err != nil {
			return nil, err
		}
		batch = append(batch, r)
	}
	return batch, ctx.Err()
}

// orderedConsumer creates the consumer, waiting for a stream that its owner
// has not declared yet.
func (b *Bus) orderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	return awaitStream(ctx, b, stream, func() (jetstream.Consumer, error) {
		return b.js.OrderedConsumer(ctx, stream, cfg)
	})
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

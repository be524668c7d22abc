package bus_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/bus/bustest"
	"github.com/mercato-shop/mercato/platform/telemetry"
)

func TestEncode_SentLaterCarriesTheEncodersTraceAndCorrelation(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		ctx := testContext(t)
		rec := tracetest.NewSpanRecorder()
		tp := telemetry.NewTracerProvider("bustest", sdktrace.WithSpanProcessor(rec))
		b := connect(t, target, tp)
		stream, prefix := newStream(t, b, false)
		typ := prefix + ".thing.happened"
		h, got := collect()
		subscribe(t, b, bus.Consumer{Stream: stream, Durable: bustest.Unique("d")}, bus.Handlers{typ: h})

		// The request that writes the event...
		reqCtx, reqSpan := tp.Tracer("test").Start(ctx, "request")
		correlation := telemetry.NewCorrelationID()
		env, err := b.Encode(telemetry.WithCorrelationID(reqCtx, correlation), bus.Event{Type: typ, Subject: "thing-1", Data: wrapperspb.String("x")})
		reqSpan.End()
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		if env.Subject != typ || env.Header.Get(jetstream.MsgIDHeader) != env.ID || env.Header.Get(bus.HeaderID) != env.ID {
			t.Errorf("envelope = %+v, want subject %s and ce-id = Nats-Msg-Id = ID", env, typ)
		}
		// ...is not what sends it: a relay sends it later, from its own context.
		if err := b.PublishEnvelope(context.WithoutCancel(t.Context()), env); err != nil {
			t.Fatalf("publish envelope: %v", err)
		}

		d := receive(t, got)
		if d.msg.ID != env.ID || d.msg.Subject != "thing-1" || d.data.GetValue() != "x" {
			t.Errorf("delivery = %+v %v, want id %s, subject thing-1, payload x", d.msg, d.data, env.ID)
		}
		if got := telemetry.CorrelationID(d.ctx); got != correlation {
			t.Errorf("handler correlation id = %q, want the encoder's %q", got, correlation)
		}
		producer, consumer := findSpan(t, rec, "publish "+typ), findSpan(t, rec, "process "+typ)
		if producer.Parent().SpanID() != reqSpan.SpanContext().SpanID() {
			t.Errorf("producer span parent = %s, want the request span %s", producer.Parent().SpanID(), reqSpan.SpanContext().SpanID())
		}
		if consumer.Parent().SpanID() != producer.SpanContext().SpanID() ||
			trace.SpanContextFromContext(d.ctx).TraceID() != reqSpan.SpanContext().TraceID() {
			t.Errorf("consumer span parent %s in trace %s, want producer span %s in trace %s", consumer.Parent().SpanID(),
				trace.SpanContextFromContext(d.ctx).TraceID(), producer.SpanContext().SpanID(), reqSpan.SpanContext().TraceID())
		}
	})
}

func TestPublishEnvelope_DedupesOnIDAndLeavesTheEnvelopeAlone(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		ctx := testContext(t)
		b := connect(t, target, nil)
		stream, prefix := newStream(t, b, false)
		typ := prefix + ".thing.happened"

		// Built by hand, without Nats-Msg-Id: the ID alone must dedupe.
		header := nats.Header{bus.HeaderType: {typ}}
		env := bus.Envelope{ID: uuid.NewString(), Subject: typ, Header: header, Data: []byte("x")}
		for range 3 {
			if err := b.PublishEnvelope(ctx, env); err != nil {
				t.Fatalf("publish envelope: %v", err)
			}
		}
		if len(header) != 1 {
			t.Errorf("envelope header changed to %v", header)
		}

		s, err := b.JetStream().Stream(ctx, stream)
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		if n := s.CachedInfo().State.Msgs; n != 1 {
			t.Errorf("stream holds %d messages, want 1", n)
		}
		msg, err := s.GetMsg(ctx, 1)
		if err != nil {
			t.Fatalf("get message: %v", err)
		}
		if msg.Header.Get(jetstream.MsgIDHeader) != env.ID || string(msg.Data) != "x" {
			t.Errorf("stored message = %v %q, want Nats-Msg-Id %s and payload x", msg.Header, msg.Data, env.ID)
		}
	})
}

func TestEncode_RejectsEventWithoutType(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		b := connect(t, target, nil)
		if _, err := b.Encode(t.Context(), bus.Event{Data: wrapperspb.String("x")}); err == nil {
			t.Error("encode accepted an event without type")
		}
		if err := b.PublishEnvelope(t.Context(), bus.Envelope{Subject: "x"}); err == nil {
			t.Error("publish envelope accepted an envelope without id")
		}
	})
}

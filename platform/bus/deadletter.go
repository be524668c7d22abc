package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Headers a dead letter carries besides all the headers of the original
// message (CloudEvents attributes, trace context, correlation id).
const (
	HeaderDLReason    = "Mercato-DL-Reason"
	HeaderDLStream    = "Mercato-DL-Stream"
	HeaderDLSubject   = "Mercato-DL-Subject"
	HeaderDLConsumer  = "Mercato-DL-Consumer"
	HeaderDLDelivered = "Mercato-DL-Delivered"
	HeaderDLTime      = "Mercato-DL-Time"

	headerDLPrefix = "Mercato-DL-"
)

// DefaultMaxDeliver bounds the attempts of a consumer with a dead-letter
// stream: with the default backoff, seven retries over about ten seconds.
const DefaultMaxDeliver = 8

// deadLetterMaxAge is how long a dead letter waits for an operator.
const deadLetterMaxAge = 14 * 24 * time.Hour

// maxReason bounds the reason header: an error text can be arbitrarily long.
const maxReason = 1024

// ErrNotFound reports a dead letter that does not exist (any more).
var ErrNotFound = errors.New("not found")

// DeadLetterStream declares the dead-letter stream called name: it keeps
// what it receives for 14 days on the subjects "<lowercase name>.>", so
// "DEADLETTER" receives "deadletter.<stream>.<subject>". A stream may serve
// several consumers and services; each declares it, as EnsureStream is
// idempotent.
func DeadLetterStream(name string) Stream {
	return Stream{Name: name, Subjects: []string{deadLetterPrefix(name) + ".>"}, MaxAge: deadLetterMaxAge}
}

func deadLetterPrefix(name string) string { return strings.ToLower(name) }

// deadLetter copies msg, which failed with cause, to the consumer's
// dead-letter stream and waits for the broker's ack. The copy keeps the
// payload and every header, and adds the Mercato-DL-* ones.
func (d *dispatcher) deadLetter(ctx context.Context, msg jetstream.Msg, cause error) error {
	c := d.consumer
	meta, err := msg.Metadata()
	if err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	h := make(nats.Header, len(msg.Headers())+7)
	for k, v := range msg.Headers() {
		h[k] = slices.Clone(v)
	}
	h.Set(HeaderDLReason, headerValue(cause.Error(), maxReason))
	h.Set(HeaderDLStream, meta.Stream)
	h.Set(HeaderDLSubject, msg.Subject())
	h.Set(HeaderDLConsumer, c.Durable)
	h.Set(HeaderDLDelivered, strconv.FormatUint(meta.NumDelivered, 10))
	h.Set(HeaderDLTime, time.Now().UTC().Format(time.RFC3339Nano))
	dl := &nats.Msg{
		Subject: deadLetterPrefix(c.DeadLetter) + "." + token(meta.Stream) + "." + msg.Subject(),
		Header:  h,
		Data:    msg.Data(),
	}
	// The id names this message of this stream for this consumer: a last
	// attempt redelivered because its Term was lost is dead-lettered again
	// with the same id, and the broker drops the copy. The stream sequence,
	// not ce-id, because a replayed message keeps its ce-id and may come
	// back here within the Duplicates window.
	id := fmt.Sprintf("dl-%s-%d-%s", meta.Stream, meta.Sequence.Stream, c.Durable)
	if _, err := d.bus.js.PublishMsg(ctx, dl, jetstream.WithMsgID(id)); err != nil {
		return fmt.Errorf("publish to %s: %w", c.DeadLetter, err)
	}
	return nil
}

// headerValue makes s safe as a NATS header value, at most n bytes long:
// a line break would end the header.
func headerValue(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// token makes s one subject token: no separators, wildcards or spaces.
func token(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '.' || r == '*' || r == '>' || unicode.IsSpace(r) {
			return '_'
		}
		return r
	}, s)
}

// DeadLetter is a message given up by a consumer, as kept in a dead-letter
// stream.
type DeadLetter struct {
	// Seq is its sequence in the dead-letter stream: its id there.
	Seq uint64
	// Stream and Subject are where it came from, and where Replay sends it.
	Stream, Subject string
	// Consumer is the durable consumer that gave it up, after Delivered
	// attempts, because of Reason.
	Consumer, Reason string
	Delivered        int
	// DeadAt is when it was given up.
	DeadAt time.Time
	// The CloudEvents attributes of the message (see Message).
	ID, Type, Source, CESubject string
	Time                        time.Time
	// Header holds the original headers, without the Mercato-DL-* ones.
	Header nats.Header
	Data   []byte
}

// DeadLetters administers a dead-letter stream: list, show, replay and
// discard what it holds.
type DeadLetters struct {
	js     jetstream.JetStream
	stream string
}

// DeadLetters administers the dead-letter stream called stream.
func (b *Bus) DeadLetters(stream string) *DeadLetters {
	return &DeadLetters{js: b.js, stream: stream}
}

// Count returns the number of dead letters.
func (d *DeadLetters) Count(ctx context.Context) (int, error) {
	s, err := d.js.Stream(ctx, d.stream)
	if err != nil {
		return 0, fmt.Errorf("count dead letters in %s: %w", d.stream, err)
	}
	return int(s.CachedInfo().State.Msgs), nil
}

// List returns up to limit dead letters, oldest first, starting after the
// sequence after (0 from the start): a page ends with the Seq to pass as
// after for the next one.
func (d *DeadLetters) List(ctx context.Context, limit int, after uint64) ([]DeadLetter, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("list dead letters in %s: limit %d is not positive", d.stream, limit)
	}
	s, err := d.js.Stream(ctx, d.stream)
	if err != nil {
		return nil, fmt.Errorf("list dead letters in %s: %w", d.stream, err)
	}
	var out []DeadLetter
	for seq := after + 1; len(out) < limit; {
		dl, err := next(ctx, s, seq)
		if errors.Is(err, ErrNotFound) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("list dead letters in %s: %w", d.stream, err)
		}
		out = append(out, dl)
		seq = dl.Seq + 1
	}
	return out, nil
}

// Get returns the dead letter seq, or an error wrapping ErrNotFound.
func (d *DeadLetters) Get(ctx context.Context, seq uint64) (DeadLetter, error) {
	s, err := d.js.Stream(ctx, d.stream)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("get dead letter %s/%d: %w", d.stream, seq, err)
	}
	dl, err := get(ctx, s, seq)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("get dead letter %s/%d: %w", d.stream, seq, err)
	}
	return dl, nil
}

// Replay sends the dead letter seq back to its original subject, with its
// payload and original headers, and then removes it. It keeps its ce-id, so
// an idempotent consumer still knows it; its Nats-Msg-Id is new, or the
// broker could drop it as a duplicate of the original. Replaying the same
// dead letter twice sends it once.
func (d *DeadLetters) Replay(ctx context.Context, seq uint64) error {
	s, err := d.js.Stream(ctx, d.stream)
	if err != nil {
		return fmt.Errorf("replay dead letter %s/%d: %w", d.stream, seq, err)
	}
	dl, err := get(ctx, s, seq)
	if err == nil {
		err = d.replay(ctx, s, dl)
	}
	if err != nil {
		return fmt.Errorf("replay dead letter %s/%d: %w", d.stream, seq, err)
	}
	return nil
}

// ReplayAll replays the dead letters present when it starts, oldest first,
// and returns how many it replayed. Those that fail again while it runs
// are left for the next call.
func (d *DeadLetters) ReplayAll(ctx context.Context) (int, error) {
	s, err := d.js.Stream(ctx, d.stream)
	if err != nil {
		return 0, fmt.Errorf("replay dead letters in %s: %w", d.stream, err)
	}
	state := s.CachedInfo().State
	n := 0
	for seq := state.FirstSeq; seq <= state.LastSeq; seq++ {
		dl, err := next(ctx, s, seq)
		if errors.Is(err, ErrNotFound) {
			break
		}
		if err != nil {
			return n, fmt.Errorf("replay dead letters in %s: %w", d.stream, err)
		}
		if dl.Seq > state.LastSeq {
			break // dead-lettered since the start, maybe by this very replay
		}
		if err := d.replay(ctx, s, dl); err != nil {
			return n, fmt.Errorf("replay dead letters in %s: %w", d.stream, err)
		}
		n++
		seq = dl.Seq
	}
	return n, nil
}

// Discard removes the dead letter seq for good.
func (d *DeadLetters) Discard(ctx context.Context, seq uint64) error {
	s, err := d.js.Stream(ctx, d.stream)
	if err == nil {
		err = remove(ctx, s, seq)
	}
	if err != nil {
		return fmt.Errorf("discard dead letter %s/%d: %w", d.stream, seq, err)
	}
	return nil
}

func (d *DeadLetters) replay(ctx context.Context, s jetstream.Stream, dl DeadLetter) error {
	if dl.Subject == "" {
		return fmt.Errorf("%d has no %s header: not a dead letter", dl.Seq, HeaderDLSubject)
	}
	msg := &nats.Msg{Subject: dl.Subject, Header: dl.Header, Data: dl.Data}
	// Derived from the dead letter, so a Replay retried after a failed
	// remove is dropped as a duplicate.
	id := fmt.Sprintf("replay-%s-%d", d.stream, dl.Seq)
	if _, err := d.js.PublishMsg(ctx, msg, jetstream.WithMsgID(id)); err != nil {
		return fmt.Errorf("publish to %s: %w", dl.Subject, err)
	}
	if err := remove(ctx, s, dl.Seq); err != nil && !errors.Is(err, ErrNotFound) {
		return err // a concurrent replay or discard may have removed it: done either way
	}
	return nil
}

// get reads the message seq, mapping a missing one to ErrNotFound.
func get(ctx context.Context, s jetstream.Stream, seq uint64) (DeadLetter, error) {
	raw, err := s.GetMsg(ctx, seq)
	return parse(raw, err)
}

// next reads the first message at or after seq.
func next(ctx context.Context, s jetstream.Stream, seq uint64) (DeadLetter, error) {
	raw, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(">"))
	return parse(raw, err)
}

// remove deletes the message seq. The broker's error for a missing
// sequence differs between versions and is not typed, so a failed delete
// is told from a missing message by looking.
func remove(ctx context.Context, s jetstream.Stream, seq uint64) error {
	err := s.DeleteMsg(ctx, seq)
	if err == nil {
		return nil
	}
	if _, getErr := s.GetMsg(ctx, seq); errors.Is(getErr, jetstream.ErrMsgNotFound) {
		return ErrNotFound
	}
	return fmt.Errorf("delete: %w", err)
}

func parse(raw *jetstream.RawStreamMsg, err error) (DeadLetter, error) {
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return DeadLetter{}, ErrNotFound
	}
	if err != nil {
		return DeadLetter{}, err
	}
	h := raw.Header
	dl := DeadLetter{
		Seq:       raw.Sequence,
		Stream:    h.Get(HeaderDLStream),
		Subject:   h.Get(HeaderDLSubject),
		Consumer:  h.Get(HeaderDLConsumer),
		Reason:    h.Get(HeaderDLReason),
		ID:        h.Get(HeaderID),
		Type:      h.Get(HeaderType),
		Source:    h.Get(HeaderSource),
		CESubject: h.Get(HeaderSubject),
		Header:    make(nats.Header, len(h)),
		Data:      raw.Data,
	}
	dl.Delivered, _ = strconv.Atoi(h.Get(HeaderDLDelivered))
	dl.Time, _ = time.Parse(time.RFC3339Nano, h.Get(HeaderTime))
	if dl.DeadAt, err = time.Parse(time.RFC3339Nano, h.Get(HeaderDLTime)); err != nil {
		dl.DeadAt = raw.Time
	}
	for k, v := range h {
		// Nats-Msg-Id is the dead letter's own, not the original's.
		if !strings.HasPrefix(k, headerDLPrefix) && k != jetstream.MsgIDHeader {
			dl.Header[k] = v
		}
	}
	return dl, nil
}

package adapters

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/runtime"
)

// Source is where projections read their streams.
type Source interface {
	Follow(ctx context.Context, f bus.Follow, fn func(ctx context.Context, batch []bus.Record) error) error
	// LastSequence is the sequence of the last message in stream, 0 when
	// it is empty or not declared yet.
	LastSequence(ctx context.Context, stream string) (uint64, error)
}

// BusSource reads streams from the broker.
type BusSource struct{ Bus *bus.Bus }

// Follow reads a stream in order; see bus.Bus.Follow.
func (s BusSource) Follow(ctx context.Context, f bus.Follow, fn func(ctx context.Context, batch []bus.Record) error) error {
	return s.Bus.Follow(ctx, f, fn)
}

// LastSequence asks the broker for the stream's last sequence.
func (s BusSource) LastSequence(ctx context.Context, stream string) (uint64, error) {
	st, err := s.Bus.JetStream().Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	return st.CachedInfo().State.LastSeq, nil
}

// linger is how long a batch waits for more events after its first: under
// a steady flow one transaction applies several events, which costs the
// shop's other databases less (they share the process), at the price of a
// read model that much later.
const linger = 20 * time.Millisecond

// Runner keeps one projection up to date: one reader per stream follows it
// from the projection's checkpoint and applies what it reads in batches. A
// failed batch is read again from the checkpoint after a backoff; a restart
// resumes from the checkpoints.
type Runner struct {
	p     Projection
	cps   *Checkpoints
	src   Source
	log   *slog.Logger
	now   func() time.Time
	retry time.Duration // first backoff after a failure; doubles to 30s

	mu         sync.Mutex
	base       context.Context // the runner's life
	stop       context.CancelFunc
	round      context.Context // the readers' current round, in base; a rebuild ends it
	endRound   context.CancelFunc
	rebuilding bool
	failures   map[string]error // the last error of each stream's reader, until it succeeds
	wg         sync.WaitGroup
}

// NewRunner returns a runner of p, not started.
func NewRunner(p Projection, cps *Checkpoints, src Source, log *slog.Logger) *Runner {
	return &Runner{
		p: p, cps: cps, src: src, now: time.Now, retry: 100 * time.Millisecond,
		log:      log.With("projection", p.Name()),
		failures: map[string]error{},
	}
}

// Name is the projection's name.
func (r *Runner) Name() string { return r.p.Name() }

// Hook runs the projection for the life of the service.
func (r *Runner) Hook() runtime.Hook {
	return runtime.Hook{Name: "projection " + r.p.Name(), Start: r.Start, Stop: r.Stop}
}

// Start registers the projection and starts its readers; it does not wait
// for them to catch up.
func (r *Runner) Start(ctx context.Context) error {
	if err := r.cps.Register(ctx, r.p.Name()); err != nil {
		return err
	}
	base, stop := context.WithCancel(context.WithoutCancel(ctx))
	r.mu.Lock()
	r.base, r.stop = base, stop
	r.round, r.endRound = context.WithCancel(base)
	r.mu.Unlock()
	for _, stream := range r.p.Streams() {
		r.wg.Go(func() { r.follow(base, stream) })
	}
	return nil
}

// Stop ends the readers and waits for them; a batch being applied is
// rolled back and read again on the next start.
func (r *Runner) Stop(context.Context) error {
	r.mu.Lock()
	stop := r.stop
	r.mu.Unlock()
	if stop != nil {
		stop()
	}
	r.wg.Wait()
	return nil
}

// follow keeps the projection reading stream until ctx ends.
func (r *Runner) follow(ctx context.Context, stream string) {
	delay := r.retry
	for ctx.Err() == nil {
		r.mu.Lock()
		round := r.round
		r.mu.Unlock()
		progressed, err := r.read(round, stream)
		if ctx.Err() != nil {
			return
		}
		if round.Err() != nil || errors.Is(err, ErrRebuilt) {
			continue // rebuilt: start again from the new checkpoint
		}
		if progressed {
			delay = r.retry // a new failure, not the same one again
		}
		r.setFailure(stream, err)
		r.log.WarnContext(ctx, "projection failed, will read again from its checkpoint", "stream", stream, "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
}

// read follows stream from the checkpoint until ctx ends or a batch fails;
// progressed says whether a batch applied before that.
func (r *Runner) read(ctx context.Context, stream string) (progressed bool, err error) {
	generation, from, err := r.cps.Position(ctx, r.p.Name(), stream)
	if err != nil {
		return false, err
	}
	err = r.src.Follow(ctx, bus.Follow{Stream: stream, From: from + 1, Linger: linger}, func(ctx context.Context, batch []bus.Record) error {
		if err := r.cps.Apply(ctx, r.p, generation, stream, batch); err != nil {
			return err
		}
		progressed = true
		r.setFailure(stream, nil)
		return nil
	})
	return progressed, err
}

func (r *Runner) setFailure(stream string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		delete(r.failures, stream)
		return
	}
	r.failures[stream] = err
}

// Rebuild drops the read model and replays every stream from its start.
// It returns once the rows are dropped; the replay goes on in the
// background while Status says rebuilding.
func (r *Runner) Rebuild(ctx context.Context) error {
	if err := r.cps.Reset(ctx, r.p, r.now()); err != nil {
		return err
	}
	r.log.InfoContext(ctx, "read model dropped, replaying the streams from the start")
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rebuilding = true
	if r.base != nil {
		r.endRound()
		r.round, r.endRound = context.WithCancel(r.base)
	}
	return nil
}

// States of a projection.
const (
	StateLive       = "live"        // it has applied everything its streams hold
	StateCatchingUp = "catching_up" // its streams hold records it has not applied yet
	StateRebuilding = "rebuilding"  // catching up after a rebuild
)

// Status is where a projection stands.
type Status struct {
	Name       string
	State      string
	Generation int64
	RebuiltAt  time.Time
	Streams    []StreamStatus
	// Errors of the streams whose reader is failing, by stream.
	Errors map[string]string
}

// StreamStatus is where a projection stands in one stream.
type StreamStatus struct {
	Stream     string
	Checkpoint uint64 // the last sequence applied
	Last       uint64 // the last sequence in the stream
	Lag        uint64 // Last - Checkpoint
}

// Status compares the projection's checkpoints with the streams' last
// sequences.
func (r *Runner) Status(ctx context.Context) (Status, error) {
	saved, err := r.cps.Saved(ctx, r.p.Name())
	if err != nil {
		return Status{}, err
	}
	st := Status{Name: r.p.Name(), Generation: saved.Generation, RebuiltAt: saved.RebuiltAt, State: StateLive}
	for _, stream := range r.p.Streams() {
		last, err := r.src.LastSequence(ctx, stream)
		if err != nil {
			return Status{}, err
		}
		ss := StreamStatus{Stream: stream, Checkpoint: saved.Checkpoints[stream], Last: last}
		if last > ss.Checkpoint {
			ss.Lag = last - ss.Checkpoint
			st.State = StateCatchingUp
		}
		st.Streams = append(st.Streams, ss)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rebuilding {
		if st.State == StateLive {
			r.rebuilding = false
		} else {
			st.State = StateRebuilding
		}
	}
	for stream, err := range r.failures {
		if st.Errors == nil {
			st.Errors = map[string]string{}
		}
		st.Errors[stream] = err.Error()
	}
	return st, nil
}

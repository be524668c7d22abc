package outbox

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// relay is a running relay goroutine.
type relay struct {
	stop  context.CancelFunc // ends intake: waiting, locking and reading rows
	abort context.CancelFunc // ends the publishing of rows already in hand
	done  chan struct{}
}

// Start starts the relay goroutine. It publishes after each InTx commit, and
// every Sweep in any case, until Stop. ctx gives its values (not its
// cancellation: the relay stops with Stop, after the batch in hand).
func (o *Outbox) Start(ctx context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.relay != nil {
		return errors.New("start outbox relay: already running")
	}
	work, abort := context.WithCancel(context.WithoutCancel(ctx))
	intake, stop := context.WithCancel(work)
	r := &relay{stop: stop, abort: abort, done: make(chan struct{})}
	o.relay = r
	go o.run(intake, work, r.done)
	return nil
}

// Stop stops the relay and waits for it: the batch in hand is published and
// marked first, unless ctx ends before, which abandons it (its events stay
// pending). Stopping a relay that is not running does nothing.
func (o *Outbox) Stop(ctx context.Context) error {
	o.mu.Lock()
	r := o.relay
	o.relay = nil
	o.mu.Unlock()
	if r == nil {
		return nil
	}
	r.stop()
	defer r.abort()
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		r.abort()
		<-r.done
		return fmt.Errorf("stop outbox relay %s: %w", o.cfg.Table, ctx.Err())
	}
}

// run is the relay loop; it returns when intake ends. Publishing is woken by
// commits (no polling delay on the hot path) and by the Sweep ticker; it
// drains full batches back to back, and after a failure retries with a
// doubling delay, warning once per outage rather than once per attempt.
func (o *Outbox) run(intake, work context.Context, done chan<- struct{}) {
	defer close(done)
	marking := make(chan struct{})
	go o.marking(intake, work, marking)
	defer func() {
		<-marking
		// What the last batches published is deleted now, so a restart
		// does not send it again.
		if err := o.mark(work); err != nil {
			o.log.Warn("outbox relay could not mark its last events sent", "err", err)
		}
	}()
	sweep := time.NewTicker(o.cfg.Sweep)
	defer sweep.Stop()
	var outage time.Time // when publishing started to fail; zero while it works
	backoff := minBackoff
	for {
		n, err := o.batch(intake, work)
		if intake.Err() != nil {
			return
		}
		if err != nil {
			if outage.IsZero() {
				outage = time.Now()
				o.log.Warn("outbox relay cannot publish, retrying until it can", "err", err)
			} else {
				o.log.Debug("outbox relay still cannot publish", "err", err, "retry_in", backoff)
			}
			select {
			case <-intake.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		if !outage.IsZero() {
			o.log.Info("outbox relay publishing again", "outage", time.Since(outage).Round(time.Millisecond))
			outage, backoff = time.Time{}, minBackoff
		}
		if n == o.cfg.Batch {
			continue // more may be pending
		}
		select {
		case <-intake.Done():
			return
		case <-o.wake:
		case <-sweep.C:
			select {
			case o.marks <- struct{}{}:
			default:
			}
		}
	}
}

// marking deletes published rows behind the relay (SQLite; see mark) until
// intake ends. A failed delete is retried at the next signal or sweep; the
// relay does not read those rows again, and after a restart they are only
// sent again and deduplicated by the broker.
func (o *Outbox) marking(intake, work context.Context, done chan<- struct{}) {
	defer close(done)
	for {
		select {
		case <-intake.Done():
			return
		case <-o.marks:
		}
		if err := o.mark(work); err != nil {
			o.log.Warn("outbox relay could not mark events sent", "err", err)
		}
	}
}

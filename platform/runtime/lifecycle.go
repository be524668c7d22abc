// Package runtime runs a service: its lifecycle (start in order, stop in
// reverse), its HTTP listener, and its /healthz and /readyz endpoints.
package runtime

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Hook is one piece of a lifecycle: a listener, a consumer, a connection.
// Stop is called only if Start succeeded. Either func may be nil.
type Hook struct {
	Name  string
	Start func(ctx context.Context) error
	Stop  func(ctx context.Context) error
}

// Lifecycle starts hooks in the order they were appended and stops the
// started ones in reverse, so what a piece depends on outlives it.
type Lifecycle struct {
	mu      sync.Mutex
	hooks   []Hook
	started int // hooks[:started] are running
}

// Append adds hooks to the end of the start order.
func (l *Lifecycle) Append(hooks ...Hook) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.hooks = append(l.hooks, hooks...)
}

// Start runs the Start of every hook not yet started, in order. When one
// fails, the hooks already started are stopped in reverse and the error names
// the failed hook.
func (l *Lifecycle) Start(ctx context.Context) error {
	for {
		l.mu.Lock()
		if l.started == len(l.hooks) {
			l.mu.Unlock()
			return nil
		}
		h := l.hooks[l.started]
		l.mu.Unlock()
		if h.Start != nil {
			if err := h.Start(ctx); err != nil {
				err = fmt.Errorf("start %s: %w", h.Name, err)
				return errors.Join(err, l.Stop(ctx))
			}
		}
		l.mu.Lock()
		l.started++
		l.mu.Unlock()
	}
}

// Stop runs the Stop of every started hook in reverse order, even when some
// fail, and returns their errors joined. It is safe to call more than once.
func (l *Lifecycle) Stop(ctx context.Context) error {
	l.mu.Lock()
	started := l.hooks[:l.started]
	l.started = 0
	l.mu.Unlock()
	var errs []error
	for i := len(started) - 1; i >= 0; i-- {
		h := started[i]
		if h.Stop == nil {
			continue
		}
		if err := h.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop %s: %w", h.Name, err))
		}
	}
	return errors.Join(errs...)
}

// Run starts lc, blocks until ctx is done, then stops lc within stopTimeout.
func Run(ctx context.Context, lc *Lifecycle, stopTimeout time.Duration) error {
	if err := lc.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
	defer cancel()
	return lc.Stop(stopCtx)
}

package telemetry

import (
	"bufio"
	"io"
	"sync"
	"time"
)

// Buffered is a log destination that gathers records and writes them out
// together: when its buffer fills, every interval, and at once after a
// record at Warn or above from a logger of NewLogger (so trouble is never
// late). A process with a busy access log spends a write syscall per
// request without it. Close flushes what is left.
type Buffered struct {
	mu     sync.Mutex
	bw     *bufio.Writer
	closed bool // after Close, each write goes out at once
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
}

// NewBuffered returns a Buffered writing to w with a buffer of size bytes,
// flushed at least every interval.
func NewBuffered(w io.Writer, size int, interval time.Duration) *Buffered {
	b := &Buffered{bw: bufio.NewWriterSize(w, size), stop: make(chan struct{}), done: make(chan struct{})}
	// The flusher ends when Close is called.
	go func() {
		defer close(b.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-b.stop:
				return
			case <-t.C:
				_ = b.Flush()
			}
		}
	}()
	return b
}

// Write implements io.Writer.
func (b *Buffered) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.bw.Write(p)
	if err == nil && b.closed {
		err = b.bw.Flush()
	}
	return n, err
}

// Flush writes out what is buffered.
func (b *Buffered) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.bw.Flush()
}

// Close stops the periodic flush and flushes; writes after it go out as
// they come.
func (b *Buffered) Close() error {
	b.once.Do(func() { close(b.stop) })
	<-b.done
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	return b.bw.Flush()
}

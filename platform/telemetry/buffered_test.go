package telemetry

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a bytes.Buffer safe to read while the flusher writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestBuffered_HoldsInfoUntilAWarningOrClose(t *testing.T) {
	var out lockedBuffer
	// An interval no test run reaches: only a warning or Close writes.
	b := NewBuffered(&out, 64<<10, time.Hour)
	logger := NewLogger(b, "test", slog.LevelInfo)

	logger.InfoContext(context.Background(), "access", "n", 1)
	if got := out.String(); got != "" {
		t.Fatalf("an info record went out at once: %q", got)
	}
	logger.WarnContext(context.Background(), "trouble")
	got := out.String()
	if !strings.Contains(got, `"msg":"access"`) || !strings.Contains(got, `"msg":"trouble"`) {
		t.Fatalf("a warning did not flush itself and what came before: %q", got)
	}
	if strings.Index(got, "access") > strings.Index(got, "trouble") {
		t.Fatalf("records out of order: %q", got)
	}

	logger.With("k", "v").InfoContext(context.Background(), "last")
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); !strings.Contains(got, `"msg":"last"`) || !strings.Contains(got, `"k":"v"`) {
		t.Fatalf("Close did not flush the last record: %q", got)
	}
}

func TestBuffered_FlushesEveryInterval(t *testing.T) {
	var out lockedBuffer
	b := NewBuffered(&out, 64<<10, 10*time.Millisecond)
	t.Cleanup(func() { _ = b.Close() })
	NewLogger(b, "test", slog.LevelInfo).InfoContext(context.Background(), "access")
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), `"msg":"access"`) {
		if time.Now().After(deadline) {
			t.Fatal("the record was never flushed")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestBuffered_WritesWhenTheBufferFills(t *testing.T) {
	var out lockedBuffer
	b := NewBuffered(&out, 256, time.Hour)
	t.Cleanup(func() { _ = b.Close() })
	if _, err := b.Write(bytes.Repeat([]byte("x"), 300)); err != nil {
		t.Fatal(err)
	}
	if got := len(out.String()); got != 300 {
		t.Fatalf("%d bytes written past a 256-byte buffer, want 300", got)
	}
}

func TestBuffered_WritesAtOnceAfterClose(t *testing.T) {
	var out lockedBuffer
	b := NewBuffered(&out, 64<<10, time.Hour)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil { // twice is harmless
		t.Fatal(err)
	}
	NewLogger(b, "test", slog.LevelInfo).InfoContext(context.Background(), "late")
	if got := out.String(); !strings.Contains(got, `"msg":"late"`) {
		t.Fatalf("a record written after Close stayed in the buffer: %q", got)
	}
}

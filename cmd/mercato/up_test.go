package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// `mercato up` prints where the shop is, serves the catalog there, and
// returns cleanly when its context is cancelled (what Ctrl-C does).
func TestUp_ServesAndStopsCleanly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	runCtx, interrupt := context.WithCancel(ctx)
	defer interrupt()

	out, w := io.Pipe()
	cmd := rootCmd()
	cmd.SetArgs([]string{"up", "--addr", "127.0.0.1:0", "--data", t.TempDir(), "--log-level", "error"})
	cmd.SetOut(w)
	cmd.SetErr(io.Discard)
	done := make(chan error, 1)
	go func() {
		done <- cmd.ExecuteContext(runCtx)
		w.Close()
	}()

	var base, admin string
	sc := bufio.NewScanner(out)
	for sc.Scan() && (base == "" || admin == "") {
		line := sc.Text()
		if u, ok := strings.CutPrefix(line, "mercato is up: "); ok {
			base = u
		}
		if strings.Contains(line, "admin@mercato.local / ") {
			admin = line
		}
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	if base == "" || admin == "" {
		t.Fatalf("no address or generated admin password printed (err %v)", <-done)
	}
	resp, err := http.Get(base + "/api/products")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("catalog: %d", resp.StatusCode)
	}

	interrupt()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("up returned %v after interrupt", err)
		}
	case <-ctx.Done():
		t.Fatal("up did not stop")
	}
	if _, err := http.Get(base + "/api/products"); err == nil {
		t.Fatal("the gateway still answers after stop")
	}
}

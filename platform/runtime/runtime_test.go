package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"
)

func recorder(log *[]string, name string, startErr error) Hook {
	return Hook{
		Name: name,
		Start: func(context.Context) error {
			*log = append(*log, "start "+name)
			return startErr
		},
		Stop: func(context.Context) error {
			*log = append(*log, "stop "+name)
			return nil
		},
	}
}

func TestLifecycle_StopsInReverseOrder(t *testing.T) {
	var log []string
	var lc Lifecycle
	lc.Append(recorder(&log, "db", nil), recorder(&log, "bus", nil), recorder(&log, "http", nil))
	if err := lc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := lc.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := []string{"start db", "start bus", "start http", "stop http", "stop bus", "stop db"}
	if !slices.Equal(log, want) {
		t.Fatalf("got %v, want %v", log, want)
	}
	// A second stop does nothing.
	if err := lc.Stop(context.Background()); err != nil || len(log) != len(want) {
		t.Fatalf("second stop: err %v, log %v", err, log)
	}
}

func TestLifecycle_FailedStartStopsWhatStarted(t *testing.T) {
	var log []string
	var lc Lifecycle
	boom := errors.New("boom")
	lc.Append(recorder(&log, "db", nil), recorder(&log, "bus", boom), recorder(&log, "http", nil))
	err := lc.Start(context.Background())
	if !errors.Is(err, boom) {
		t.Fatalf("want boom, got %v", err)
	}
	want := []string{"start db", "start bus", "stop db"}
	if !slices.Equal(log, want) {
		t.Fatalf("got %v, want %v", log, want)
	}
}

func TestLifecycle_HooksAppendedWhileStartingAlsoStart(t *testing.T) {
	var log []string
	var lc Lifecycle
	lc.Append(Hook{Name: "setup", Start: func(context.Context) error {
		lc.Append(recorder(&log, "late", nil))
		return nil
	}})
	if err := lc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	_ = lc.Stop(context.Background())
	if want := []string{"start late", "stop late"}; !slices.Equal(log, want) {
		t.Fatalf("got %v, want %v", log, want)
	}
}

func TestHealth_ReadyReflectsChecksAndDraining(t *testing.T) {
	var h Health
	mux := http.NewServeMux()
	h.Register(mux)
	var dbErr error
	h.Check("database", func(context.Context) error { return dbErr })

	get := func(path string) (int, map[string]any) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		var body map[string]any
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		return rec.Code, body
	}
	if code, body := get("/readyz"); code != http.StatusOK || body["status"] != "ready" {
		t.Fatalf("ready: %d %v", code, body)
	}
	dbErr = errors.New("connection refused")
	code, body := get("/readyz")
	if code != http.StatusServiceUnavailable || body["checks"].(map[string]any)["database"] != "connection refused" {
		t.Fatalf("failing check: %d %v", code, body)
	}
	dbErr = nil
	h.Drain()
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || body["status"] != "draining" {
		t.Fatalf("draining: %d %v", code, body)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Fatalf("healthz while draining: %d", code)
	}
}

func TestHTTPServer_StopDrainsRequestsInFlight(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	srv := NewHTTPServer("127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		close(entered)
		<-release
		_, _ = io.WriteString(w, "done")
	}), slog.New(slog.DiscardHandler))
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	type result struct {
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + srv.Addr())
		if err != nil {
			got <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got <- result{string(b), err}
	}()
	<-entered
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stopped <- srv.Stop(ctx)
	}()
	// Stop must wait for the request: it cannot have returned yet.
	select {
	case err := <-stopped:
		t.Fatalf("stop returned before the request finished: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if r := <-got; r.err != nil || r.body != "done" {
		t.Fatalf("request in flight: %q %v", r.body, r.err)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get("http://" + srv.Addr()); err == nil {
		t.Fatal("server still accepts connections after stop")
	}
}

package deadletter_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/bus/bustest"
	"github.com/mercato-shop/mercato/platform/deadletter"
	"github.com/mercato-shop/mercato/platform/web"
)

const waitFor = 15 * time.Second

// fixture is a work queue whose consumer dead-letters every message while
// broken, and the API over its dead-letter stream.
type fixture struct {
	api     http.Handler
	bus     *bus.Bus
	dls     *bus.DeadLetters
	typ     string
	broken  atomic.Bool
	handled chan string // ce-ids handled once no longer broken
}

func setup(t *testing.T, target bustest.Target) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	b, err := bus.Connect(ctx, bus.Config{URL: target.URL, Source: "deadletter-test"})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(b.Close)
	stream, dlStream, prefix := bustest.Unique("S"), bustest.Unique("DL"), bustest.Unique("t")
	for _, s := range []bus.Stream{{Name: stream, Subjects: []string{prefix + ".>"}, WorkQueue: true}, bus.DeadLetterStream(dlStream)} {
		if err := b.EnsureStream(ctx, s); err != nil {
			t.Fatalf("ensure stream: %v", err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			if err := b.JetStream().DeleteStream(ctx, s.Name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
				t.Errorf("delete stream %s: %v", s.Name, err)
			}
		})
	}
	f := &fixture{bus: b, dls: b.DeadLetters(dlStream), typ: prefix + ".cmd.do", handled: make(chan string, 10)}
	f.broken.Store(true)
	sub, err := b.Subscribe(ctx, bus.Consumer{Stream: stream, Durable: "worker", DeadLetter: dlStream},
		bus.Handlers{f.typ: func(_ context.Context, m bus.Message, _ []byte) error {
			if f.broken.Load() {
				return fmt.Errorf("refused: %w", bus.ErrPoison)
			}
			f.handled <- m.ID
			return nil
		}})
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	t.Cleanup(sub.Stop)
	mux := http.NewServeMux()
	deadletter.Routes(mux, f.dls, nil)
	f.api = mux
	return f
}

// deadLetter publishes a message with ce-id id and waits until it is
// dead-lettered; it returns its sequence in the dead-letter stream.
func (f *fixture) deadLetter(t *testing.T, id string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	before, err := f.dls.Count(ctx)
	if err != nil {
		t.Fatalf("count: %v", err)
	}
	msg := &nats.Msg{Subject: f.typ, Header: nats.Header{bus.HeaderType: {f.typ}, bus.HeaderID: {id}}, Data: []byte("payload " + id)}
	if _, err := f.bus.JetStream().PublishMsg(ctx, msg); err != nil {
		t.Fatalf("publish: %v", err)
	}
	for {
		list, err := f.dls.List(ctx, 100, 0)
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		if len(list) > before {
			return list[len(list)-1].Seq
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s not dead-lettered", id)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// do serves one request as the given caller ("" for anonymous).
func (f *fixture) do(method, path, subject, roles string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, nil)
	if subject != "" {
		r.Header.Set(web.SubjectHeader, subject)
		r.Header.Set(web.RolesHeader, roles)
	}
	w := httptest.NewRecorder()
	f.api.ServeHTTP(w, r)
	return w
}

func (f *fixture) admin(method, path string) *httptest.ResponseRecorder {
	return f.do(method, path, "admin-1", "customer,admin")
}

// decode checks the status and content type of w and decodes its body.
func decode[T any](t *testing.T, w *httptest.ResponseRecorder, status int, contentType string) T {
	t.Helper()
	var v T
	if w.Code != status || w.Header().Get("Content-Type") != contentType {
		t.Fatalf("status %d, content type %q, want %d, %q; body %s", w.Code, w.Header().Get("Content-Type"), status, contentType, w.Body)
	}
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
		t.Fatalf("decode %s: %v", w.Body, err)
	}
	return v
}

func problem(t *testing.T, w *httptest.ResponseRecorder, status int) web.Problem {
	t.Helper()
	return decode[web.Problem](t, w, status, web.ProblemContentType)
}

func TestAPI_RequiresAnAdmin(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		f := setup(t, target)
		seq := f.deadLetter(t, "kept")
		for _, route := range []struct{ method, path string }{
			{"GET", "/admin/deadletters"},
			{"GET", fmt.Sprintf("/admin/deadletters/%d", seq)},
			{"POST", fmt.Sprintf("/admin/deadletters/%d/replay", seq)},
			{"POST", "/admin/deadletters/replay"},
			{"DELETE", fmt.Sprintf("/admin/deadletters/%d", seq)},
		} {
			problem(t, f.do(route.method, route.path, "", ""), http.StatusUnauthorized)
			problem(t, f.do(route.method, route.path, "customer-1", "customer"), http.StatusForbidden)
		}
		if _, err := f.dls.Get(t.Context(), seq); err != nil {
			t.Errorf("the dead letter is gone after refused requests: %v", err)
		}
	})
}

func TestAPI_ListsDeadLettersInPages(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		f := setup(t, target)
		var seqs []uint64
		for _, id := range []string{"a", "b", "c"} {
			seqs = append(seqs, f.deadLetter(t, id))
		}

		type page struct {
			DeadLetters []map[string]any `json:"dead_letters"`
			NextAfter   *uint64          `json:"next_after"`
		}
		p := decode[page](t, f.admin("GET", "/admin/deadletters?limit=2"), http.StatusOK, "application/json")
		if len(p.DeadLetters) != 2 || p.NextAfter == nil || *p.NextAfter != seqs[1] {
			t.Fatalf("first page = %+v, want a and b, next after %d", p, seqs[1])
		}
		first := p.DeadLetters[0]
		for key, want := range map[string]any{
			"seq": float64(seqs[0]), "id": "a", "type": f.typ, "subject": f.typ, "consumer": "worker", "delivered": float64(1),
		} {
			if first[key] != want {
				t.Errorf("%s = %v, want %v", key, first[key], want)
			}
		}
		if reason, _ := first["reason"].(string); !strings.Contains(reason, "refused") {
			t.Errorf("reason = %q, want the handler's error", reason)
		}
		if at, _ := first["dead_at"].(string); at == "" {
			t.Error("dead_at missing")
		}
		for _, key := range []string{"headers", "data"} {
			if _, ok := first[key]; ok {
				t.Errorf("the list carries %s", key)
			}
		}

		p = decode[page](t, f.admin("GET", fmt.Sprintf("/admin/deadletters?limit=2&after=%d", *p.NextAfter)), http.StatusOK, "application/json")
		if len(p.DeadLetters) != 1 || p.DeadLetters[0]["id"] != "c" || p.NextAfter != nil {
			t.Errorf("second page = %+v, want c and no next page", p)
		}
		p = decode[page](t, f.admin("GET", "/admin/deadletters"), http.StatusOK, "application/json")
		if len(p.DeadLetters) != 3 || p.NextAfter != nil {
			t.Errorf("default page = %+v, want all three", p)
		}
	})
}

func TestAPI_ShowsOneWithHeadersAndPayload(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		f := setup(t, target)
		seq := f.deadLetter(t, "a")

		type letter struct {
			Seq     uint64              `json:"seq"`
			ID      string              `json:"id"`
			Headers map[string][]string `json:"headers"`
			Data    []byte              `json:"data"` // base64 on the wire
		}
		got := decode[letter](t, f.admin("GET", fmt.Sprintf("/admin/deadletters/%d", seq)), http.StatusOK, "application/json")
		if got.Seq != seq || got.ID != "a" || string(got.Data) != "payload a" {
			t.Errorf("dead letter = %+v, want seq %d, id a, payload \"payload a\"", got, seq)
		}
		if h := got.Headers[bus.HeaderType]; len(h) != 1 || h[0] != f.typ {
			t.Errorf("headers = %v, want the original ce-type", got.Headers)
		}
		problem(t, f.admin("GET", fmt.Sprintf("/admin/deadletters/%d", seq+100)), http.StatusNotFound)
	})
}

func TestAPI_ReplaysAndDiscards(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		f := setup(t, target)
		a, b := f.deadLetter(t, "a"), f.deadLetter(t, "b")
		c := f.deadLetter(t, "c")
		f.broken.Store(false)

		type replayed struct {
			Replayed int `json:"replayed"`
		}
		if got := decode[replayed](t, f.admin("POST", fmt.Sprintf("/admin/deadletters/%d/replay", a)), http.StatusAccepted, "application/json"); got.Replayed != 1 {
			t.Errorf("replayed %d, want 1", got.Replayed)
		}
		if id := receive(t, f.handled); id != "a" {
			t.Errorf("handled %s, want a", id)
		}
		problem(t, f.admin("POST", fmt.Sprintf("/admin/deadletters/%d/replay", a)), http.StatusNotFound)

		if w := f.admin("DELETE", fmt.Sprintf("/admin/deadletters/%d", b)); w.Code != http.StatusNoContent || w.Body.Len() != 0 {
			t.Errorf("discard: status %d, body %q; want 204 and none", w.Code, w.Body)
		}
		problem(t, f.admin("GET", fmt.Sprintf("/admin/deadletters/%d", b)), http.StatusNotFound)
		problem(t, f.admin("DELETE", fmt.Sprintf("/admin/deadletters/%d", b)), http.StatusNotFound)

		if got := decode[replayed](t, f.admin("POST", "/admin/deadletters/replay"), http.StatusAccepted, "application/json"); got.Replayed != 1 {
			t.Errorf("replay all replayed %d, want 1 (c)", got.Replayed)
		}
		if id := receive(t, f.handled); id != "c" {
			t.Errorf("handled %s, want c", id)
		}
		problem(t, f.admin("GET", fmt.Sprintf("/admin/deadletters/%d", c)), http.StatusNotFound)
		if n, err := f.dls.Count(t.Context()); err != nil || n != 0 {
			t.Errorf("dead letters left = %d (%v), want 0", n, err)
		}
	})
}

func TestAPI_RejectsBadInput(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		f := setup(t, target)
		for _, route := range []struct{ method, path string }{
			{"GET", "/admin/deadletters/abc"},
			{"GET", "/admin/deadletters/0"},
			{"GET", "/admin/deadletters/-1"},
			{"POST", "/admin/deadletters/x/replay"},
			{"DELETE", "/admin/deadletters/1.5"},
		} {
			problem(t, f.admin(route.method, route.path), http.StatusBadRequest)
		}
		for query, field := range map[string]string{"limit=0": "limit", "limit=501": "limit", "limit=x": "limit", "after=-1": "after"} {
			p := problem(t, f.admin("GET", "/admin/deadletters?"+query), http.StatusBadRequest)
			if len(p.Errors) != 1 || p.Errors[0].Field != field {
				t.Errorf("%s: errors %+v, want one on %s", query, p.Errors, field)
			}
		}
	})
}

func TestAPI_BrokerFailureIsAServerError(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		f := setup(t, target)
		mux := http.NewServeMux()
		deadletter.Routes(mux, f.bus.DeadLetters(bustest.Unique("MISSING")), nil)
		f.api = mux
		p := problem(t, f.admin("GET", "/admin/deadletters"), http.StatusInternalServerError)
		if p.Detail != "" {
			t.Errorf("detail = %q: internal errors must not leak", p.Detail)
		}
	})
}

func receive[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitFor):
		var zero T
		t.Fatalf("nothing received after %s", waitFor)
		return zero
	}
}

package adapters_test

import (
	"bufio"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mercato-shop/mercato/platform/web"
	"github.com/mercato-shop/mercato/services/order/adapters"
	"github.com/mercato-shop/mercato/services/order/domain"
)

// history is an order's states by version, changed by the test.
type history struct {
	mu     sync.Mutex
	states []*domain.Order
}

func (h *history) Order(_ context.Context, id string) (*domain.Order, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.states[len(h.states)-1], nil
}

func (h *history) States(_ context.Context, id string, after int64) ([]*domain.Order, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*domain.Order
	for _, o := range h.states {
		if o.Version() > after {
			out = append(out, o)
		}
	}
	return out, nil
}

func (h *history) add(o *domain.Order) {
	h.mu.Lock()
	h.states = append(h.states, o)
	h.mu.Unlock()
}

// lines reads a stream line by line.
func lines(t *testing.T, resp *http.Response) <-chan string {
	out := make(chan string, 100)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			out <- sc.Text()
		}
	}()
	return out
}

// await reads lines until one satisfies ok, failing after a deadline.
func await(t *testing.T, in <-chan string, what string, ok func(string) bool) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case l, open := <-in:
			if !open {
				t.Fatalf("stream ended before %s", what)
			}
			if ok(l) {
				return
			}
		case <-timeout:
			t.Fatalf("no %s", what)
		}
	}
}

func TestUpdates_HeartbeatsWhileIdleAndSendsAChangeWhenNotified(t *testing.T) {
	o, _ := newOrder(t, "c1")
	h := &history{}
	h.add(o)
	changes := &adapters.Changes{}
	mux := http.NewServeMux()
	mux.Handle("GET /api/orders/{id}/updates", &adapters.Updates{Orders: h, Changes: changes, Heartbeat: 20 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	req, err := http.NewRequest("GET", srv.URL+"/api/orders/"+o.ID()+"/updates", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(web.SubjectHeader, "c1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	in := lines(t, resp)
	await(t, in, "the current state", func(l string) bool { return strings.Contains(l, `"status":"PENDING"`) })
	await(t, in, "a heartbeat", func(l string) bool { return l == ": heartbeat" })

	// A confirmation, and the signal the broker would carry.
	next := domain.Restore(o.ID(), "c1", domain.Confirmed, "", o.Lines(), o.Total(), o.Saga(), domain.Shipment{}, 2, o.CreatedAt(), time.Now())
	h.add(next)
	changes.Notify(o.ID())
	await(t, in, "the confirmation", func(l string) bool { return l == "id: 2" })
	await(t, in, "its data", func(l string) bool { return strings.Contains(l, `"status":"CONFIRMED"`) })

	// The final state ends the stream.
	h.add(domain.Restore(o.ID(), "c1", domain.Cancelled, "customer_cancelled", o.Lines(), o.Total(), o.Saga(), domain.Shipment{}, 3, o.CreatedAt(), time.Now()))
	changes.Notify(o.ID())
	await(t, in, "the cancellation", func(l string) bool { return strings.Contains(l, `"status":"CANCELLED"`) })
	for range in { // drains until the server closes the stream
	}
}

func TestChanges_NotifiesOnlyTheWatchersOfThatOrder(t *testing.T) {
	c := &adapters.Changes{}
	a, b := uuid.NewString(), uuid.NewString()
	wa, stopA := c.Watch(a)
	wb, stopB := c.Watch(b)
	defer stopB()
	c.Notify(a)
	c.Notify(a) // coalesces with the first
	select {
	case <-wa:
	default:
		t.Fatal("the watcher of a was not signalled")
	}
	select {
	case <-wa:
		t.Fatal("two signals for two notifications in a row; want them coalesced")
	case <-wb:
		t.Fatal("the watcher of b was signalled for a")
	default:
	}
	stopA()
	c.Notify(a) // nobody watches: nothing blocks
}

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mercato-shop/mercato/shop"
)

// sseEvent is one server-sent event.
type sseEvent struct {
	ID    string
	Event string
	Order orderJSON
}

// openUpdates opens the order's update stream through the gateway; events
// arrive on the channel as the server sends them, which is closed when the
// stream ends.
func (c client) openUpdates(ctx context.Context, tok, id, lastEventID string) (*http.Response, <-chan sseEvent) {
	c.t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+"/api/orders/"+id+"/updates", nil)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "text/event-stream")
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("open updates: %v", err)
	}
	out := make(chan sseEvent)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		var data string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if data != "" {
					if err := json.Unmarshal([]byte(data), &ev.Order); err != nil {
						c.t.Errorf("event data %q: %v", data, err)
						return
					}
					select {
					case out <- ev:
					case <-ctx.Done():
						return
					}
				}
				ev, data = sseEvent{}, ""
			case strings.HasPrefix(line, "id: "):
				ev.ID = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "event: "):
				ev.Event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				data += strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	return resp, out
}

// collect reads events until the stream ends, failing after the context's
// deadline.
func collect(t *testing.T, ctx context.Context, events <-chan sseEvent) []sseEvent {
	t.Helper()
	var got []sseEvent
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return got
			}
			got = append(got, ev)
		case <-ctx.Done():
			t.Fatalf("the stream did not end; got %+v", got)
		}
	}
}

func statuses(evs []sseEvent) string {
	var s []string
	for _, e := range evs {
		s = append(s, e.ID+":"+e.Order.Status)
	}
	return strings.Join(s, " ")
}

func TestShop_OrderUpdatesStreamEveryStatusChange(t *testing.T) {
	s, c := startShop(t, t.TempDir(), func(cfg *shop.Config) { cfg.ShipAfter = 200 * time.Millisecond })
	t.Cleanup(func() { stopShop(t, s) })
	// The provider takes its time, so the stream opens on a PENDING order.
	s.Provider().SetLatency(time.Second)
	ann, bob := c.signUp("Ann"), c.signUp("Bob")
	mug := c.catalog()["MUG-001"]
	_, o := c.placeOrder(ann, mug.ID, 1, "tok_ok")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, events := c.openUpdates(ctx, ann, o.ID, "")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("updates: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	// Events pass the gateway as they are sent: the first arrives while the
	// order is still PENDING, not when the stream ends.
	var first sseEvent
	select {
	case first = <-events:
	case <-ctx.Done():
		t.Fatal("no first event")
	}
	var now orderJSON
	c.do("GET", "/api/orders/"+o.ID, ann, nil).json(t, &now)
	if first.Order.Status != "PENDING" || now.Status != "PENDING" {
		t.Fatalf("first event %s arrived when the order was %s", first.Order.Status, now.Status)
	}
	// No polling: the client only reads, and the stream ends by itself
	// once the order is final.
	got := append([]sseEvent{first}, collect(t, ctx, events)...)
	if statuses(got) != "1:PENDING 2:CONFIRMED 3:SHIPPED" {
		t.Fatalf("stream: %s", statuses(got))
	}
	for _, e := range got {
		if e.Event != "status" || e.Order.ID != o.ID {
			t.Fatalf("event %+v", e)
		}
	}

	// A client that reconnects after version 1 gets what it missed, and
	// one that saw the final state gets nothing more.
	_, events = c.openUpdates(ctx, ann, o.ID, "1")
	if got := statuses(collect(t, ctx, events)); got != "2:CONFIRMED 3:SHIPPED" {
		t.Fatalf("resumed after 1: %s", got)
	}
	_, events = c.openUpdates(ctx, ann, o.ID, "3")
	if got := collect(t, ctx, events); len(got) != 0 {
		t.Fatalf("resumed after the end: %s", statuses(got))
	}

	// Another customer's order does not exist; a bad Last-Event-ID is 400.
	c.expectProblem(c.do("GET", "/api/orders/"+o.ID+"/updates", bob, nil), http.StatusNotFound, "another customer's updates")
	c.expectProblem(c.do("GET", "/api/orders/"+o.ID+"/updates", ann, nil, "Last-Event-ID", "x"), http.StatusBadRequest, "bad Last-Event-ID")

	// A cancelled order's stream ends at CANCELLED.
	s.Provider().SetLatency(0)
	_, d := c.placeOrder(ann, mug.ID, 1, "tok_decline")
	_, events = c.openUpdates(ctx, ann, d.ID, "")
	got = collect(t, ctx, events)
	if n := len(got); n == 0 || got[n-1].Order.Status != "CANCELLED" || got[n-1].Order.Reason != "payment_declined" {
		t.Fatalf("declined order's stream: %s", statuses(got))
	}
}

package adapters

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/web"
	"github.com/mercato-shop/mercato/services/order/domain"
)

// Changes tells the streams watching an order that it changed. The order
// service hears its own published events on the broker (Listen), so a
// stream served by one replica learns of a change another replica made.
type Changes struct {
	mu       sync.Mutex
	watchers map[string]map[chan struct{}]struct{}
}

// Watch returns a channel that receives a signal after each change of
// order id (signals coalesce), and a function that stops the watch.
func (c *Changes) Watch(id string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	c.mu.Lock()
	if c.watchers == nil {
		c.watchers = map[string]map[chan struct{}]struct{}{}
	}
	if c.watchers[id] == nil {
		c.watchers[id] = map[chan struct{}]struct{}{}
	}
	c.watchers[id][ch] = struct{}{}
	c.mu.Unlock()
	return ch, func() {
		c.mu.Lock()
		delete(c.watchers[id], ch)
		if len(c.watchers[id]) == 0 {
			delete(c.watchers, id)
		}
		c.mu.Unlock()
	}
}

// Notify signals every watcher of order id.
func (c *Changes) Notify(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ch := range c.watchers[id] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Listen notifies watchers of every order event published on the broker,
// by its ce-subject (the order id), until the subscription ends.
func (c *Changes) Listen(nc *nats.Conn) (*nats.Subscription, error) {
	sub, err := nc.Subscribe("order.>", func(m *nats.Msg) {
		if id := m.Header.Get(bus.HeaderSubject); id != "" {
			c.Notify(id)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("listen for order changes: %w", err)
	}
	return sub, nil
}

type stateReader interface {
	Order(ctx context.Context, id string) (*domain.Order, error)
	States(ctx context.Context, id string, after int64) ([]*domain.Order, error)
}

// Updates serves GET /api/orders/{id}/updates: the order's status changes
// as server-sent events, starting with its state now, each with the
// order's version as its id, so a client that reconnects with
// Last-Event-ID gets exactly what it missed. The stream ends after the
// order reaches a final status (SHIPPED or CANCELLED). Comments keep idle
// connections alive through proxies.
type Updates struct {
	Orders    stateReader
	Changes   *Changes
	Heartbeat time.Duration // default 15s
	Logger    *slog.Logger
}

// retryMillis is how long a client waits before reconnecting.
const retryMillis = 2000

func (u *Updates) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	caller, id, ok := orderRequest(w, r)
	if !ok {
		return
	}
	var last int64
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || n < 0 {
			web.WriteProblem(w, r, web.Invalid(web.FieldError{Field: "Last-Event-ID", Message: "must be a version the stream sent"}))
			return
		}
		last = n
	}
	// Watch before the first read, so no change slips in between.
	changed, stop := u.Changes.Watch(id)
	defer stop()
	o, err := u.Orders.Order(r.Context(), id)
	if err == nil && !mayRead(caller, o) {
		err = domain.ErrNotFound
	}
	if err != nil {
		(&HTTP{Logger: u.Logger}).fail(w, r, err)
		return
	}

	rc := http.NewResponseController(w)
	// The request is read; the connection now carries the stream for as
	// long as it lasts.
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx and friends: do not buffer
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprintf(w, "retry: %d\n\n", retryMillis); err != nil {
		return
	}

	send := func(o *domain.Order) bool {
		data, err := json.Marshal(toJSON(o))
		if err != nil {
			return false
		}
		if _, err := fmt.Fprintf(w, "id: %d\nevent: status\ndata: %s\n\n", o.Version(), data); err != nil {
			return false
		}
		last = o.Version()
		return true
	}
	// The first event is the state now, unless the client resumes: then
	// every change it missed.
	if last == 0 {
		if !send(o) {
			return
		}
	}
	heartbeat := u.Heartbeat
	if heartbeat <= 0 {
		heartbeat = 15 * time.Second
	}
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	for {
		states, err := u.Orders.States(r.Context(), id, last)
		if err != nil {
			if r.Context().Err() == nil {
				u.Logger.WarnContext(r.Context(), "order updates", "order_id", id, "err", err)
			}
			return
		}
		for _, s := range states {
			if !send(s) {
				return
			}
		}
		if err := rc.Flush(); err != nil {
			return
		}
		if n := len(states); (n > 0 && final(states[n-1])) || (n == 0 && last >= o.Version() && final(o)) {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-changed:
		case <-tick.C:
			// Also a chance to see a change whose signal was lost.
			if _, err := fmt.Fprint(w, ": heartbeat\n\n"); err != nil {
				return
			}
		}
	}
}

func final(o *domain.Order) bool {
	return o.Status() == domain.Shipped || o.Status() == domain.Cancelled
}

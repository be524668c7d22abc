package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/mercato-shop/mercato/shop"
)

type eventJSON struct {
	ID         string          `json:"id"`
	Version    int64           `json:"version"`
	Type       string          `json:"type"`
	Schema     int             `json:"schema"`
	Data       json.RawMessage `json:"data"`
	RecordedAt time.Time       `json:"recorded_at"`
}

func (c client) events(tok, id string) []eventJSON {
	c.t.Helper()
	r := c.do("GET", "/api/orders/"+id+"/events", tok, nil)
	if r.status != http.StatusOK {
		c.t.Fatalf("events of %s: %d %s", id, r.status, r.body)
	}
	var evs []eventJSON
	r.json(c.t, &evs)
	return evs
}

func TestShop_OrdersAreEventSourcedAndShipAfterTheDelay(t *testing.T) {
	s, c := startShop(t, t.TempDir(), func(cfg *shop.Config) { cfg.ShipAfter = 300 * time.Millisecond })
	t.Cleanup(func() { stopShop(t, s) })
	ann, bob := c.signUp("Ann"), c.signUp("Bob")
	mug := c.catalog()["MUG-001"]

	_, o := c.placeOrder(ann, mug.ID, 1, "tok_ok")
	// CONFIRMED, then SHIPPED once the shipment is due: no client action.
	shipped := c.waitStatus(ann, o.ID, "SHIPPED")
	if shipped.Version != 3 {
		t.Fatalf("shipped order at version %d, want 3 (created, confirmed, shipped)", shipped.Version)
	}

	// The audit trail: every change, in order, as stored.
	evs := c.events(ann, o.ID)
	var types []string
	for i, e := range evs {
		types = append(types, e.Type)
		if e.Version != int64(i+1) || e.ID == "" || e.RecordedAt.IsZero() {
			t.Fatalf("event %d: %+v", i, e)
		}
	}
	if fmt.Sprint(types) != "[order.created order.confirmed order.shipped]" {
		t.Fatalf("events %v", types)
	}
	var created struct {
		Total struct {
			Amount   int64  `json:"amount"`
			Currency string `json:"currency"`
		} `json:"total"`
	}
	if err := json.Unmarshal(evs[0].Data, &created); err != nil || evs[0].Schema != 2 ||
		created.Total.Amount != mug.Price.Amount || created.Total.Currency != "EUR" {
		t.Fatalf("order.created: schema %d %s (%v)", evs[0].Schema, evs[0].Data, err)
	}
	var ship struct {
		ShipmentID     string `json:"shipment_id"`
		TrackingNumber string `json:"tracking_number"`
	}
	if err := json.Unmarshal(evs[2].Data, &ship); err != nil || ship.ShipmentID == "" || ship.TrackingNumber == "" {
		t.Fatalf("order.shipped: %s (%v)", evs[2].Data, err)
	}

	// Time travel: the order as it was at each version.
	for v, want := range map[int]string{1: "PENDING", 2: "CONFIRMED", 3: "SHIPPED"} {
		var at orderJSON
		r := c.do("GET", fmt.Sprintf("/api/orders/%s?version=%d", o.ID, v), ann, nil)
		r.json(t, &at)
		if r.status != http.StatusOK || at.Status != want || at.Version != int64(v) {
			t.Fatalf("version %d: %d %s, want %s", v, r.status, r.body, want)
		}
	}
	c.expectProblem(c.do("GET", "/api/orders/"+o.ID+"?version=4", ann, nil), http.StatusNotFound, "a version not reached")
	for _, bad := range []string{"0", "-1", "x", "1.5"} {
		c.expectProblem(c.do("GET", "/api/orders/"+o.ID+"?version="+bad, ann, nil), http.StatusBadRequest, "version="+bad)
	}

	// Another customer sees neither the order, its past nor its events.
	c.expectProblem(c.do("GET", "/api/orders/"+o.ID+"/events", bob, nil), http.StatusNotFound, "another customer's events")
	c.expectProblem(c.do("GET", "/api/orders/"+o.ID+"?version=1", bob, nil), http.StatusNotFound, "another customer's past")

	// A shipped order can no longer be cancelled.
	c.expectProblem(c.do("POST", "/api/orders/"+o.ID+"/cancel", ann, nil), http.StatusConflict, "cancel a shipped order")
}

// The shipping timer is durable: an order confirmed before a restart ships
// after it, at its due time.
func TestShop_ShipmentDueBeforeARestartShipsAfterIt(t *testing.T) {
	data := t.TempDir()
	ship := func(cfg *shop.Config) { cfg.ShipAfter = 2 * time.Second }
	s, c := startShop(t, data, ship)
	ann := c.signUp("Ann")
	_, o := c.placeOrder(ann, c.catalog()["MUG-001"].ID, 1, "tok_ok")
	c.waitStatus(ann, o.ID, "CONFIRMED")
	stopShop(t, s)

	s, c = startShop(t, data, ship)
	t.Cleanup(func() { stopShop(t, s) })
	if got := c.waitStatus(ann, o.ID, "SHIPPED"); got.Version != 3 {
		t.Fatalf("shipped after a restart: %+v", got)
	}
}

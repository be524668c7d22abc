package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"testing"
	"time"
)

// viewJSON is an order as GET /api/orders lists it: GET /api/orders/{id}'s
// fields plus what the read model copies in.
type viewJSON struct {
	ID         string `json:"id"`
	CustomerID string `json:"customer_id"`
	Status     string `json:"status"`
	Reason     string `json:"reason"`
	Items      []struct {
		ProductID string `json:"product_id"`
		Name      string `json:"name"`
		Quantity  int64  `json:"quantity"`
		UnitPrice struct {
			Amount   int64  `json:"amount"`
			Currency string `json:"currency"`
		} `json:"unit_price"`
	} `json:"items"`
	Total struct {
		Amount   int64  `json:"amount"`
		Currency string `json:"currency"`
	} `json:"total"`
	Saga      string    `json:"saga"`
	Version   int64     `json:"version"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// Only in the read model.
	CustomerName  string `json:"customer_name"`
	PaymentStatus string `json:"payment_status"`
	Shipment      *struct {
		ShipmentID     string    `json:"shipment_id"`
		TrackingNumber string    `json:"tracking_number"`
		ShippedAt      time.Time `json:"shipped_at"`
	} `json:"shipment"`
}

func (v viewJSON) utc() viewJSON {
	v.CreatedAt, v.UpdatedAt = v.CreatedAt.UTC(), v.UpdatedAt.UTC()
	return v
}

type listJSON struct {
	Orders     []viewJSON `json:"orders"`
	NextCursor string     `json:"next_cursor"`
}

// truth is an order as its owners say it is: the order service's view,
// with the customer's name and the payment service's status.
func (c client) truth(tok, name, id string) viewJSON {
	c.t.Helper()
	var v viewJSON
	r := c.do("GET", "/api/orders/"+id, tok, nil)
	if r.status != http.StatusOK {
		c.t.Fatalf("order %s: %d %s", id, r.status, r.body)
	}
	r.json(c.t, &v)
	v.CustomerName = name
	if ps := c.payments(tok, id); len(ps) == 1 {
		v.PaymentStatus = ps[0].Status
	}
	return v.utc()
}

// listAll follows the caller's list page by page, limit orders a page.
func (c client) listAll(tok string, limit int) (orders []viewJSON, pages []string) {
	c.t.Helper()
	q := url.Values{"limit": {fmt.Sprint(limit)}}
	for {
		r := c.do("GET", "/api/orders?"+q.Encode(), tok, nil)
		if r.status != http.StatusOK {
			c.t.Fatalf("list: %d %s", r.status, r.body)
		}
		pages = append(pages, string(r.body))
		var l listJSON
		r.json(c.t, &l)
		for _, o := range l.Orders {
			orders = append(orders, o.utc())
		}
		if l.NextCursor == "" {
			return orders, pages
		}
		q.Set("cursor", l.NextCursor)
	}
}

// waitList polls the caller's list until it is want, in that order.
func (c client) waitList(tok string, want []viewJSON) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, _ := c.listAll(tok, 100)
		if reflect.DeepEqual(got, want) {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the read model shows\n%+v\nwant\n%+v", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type projectionJSON struct {
	Name       string `json:"name"`
	State      string `json:"state"`
	Generation int64  `json:"generation"`
}

// waitProjections polls until every projection is live at generation gen
// or later.
func (c client) waitProjections(admin string, gen int64) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := c.do("GET", "/admin/projections", admin, nil)
		if r.status != http.StatusOK {
			c.t.Fatalf("projections: %d %s", r.status, r.body)
		}
		var out struct{ Projections []projectionJSON }
		r.json(c.t, &out)
		live := len(out.Projections) == 2
		for _, p := range out.Projections {
			live = live && p.State == "live" && p.Generation >= gen
		}
		if live {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("projections not live at generation %d: %s", gen, r.body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c client) rebuild(admin, projection string) {
	c.t.Helper()
	if r := c.do("POST", "/admin/projections/"+projection+"/rebuild", admin, nil); r.status != http.StatusAccepted {
		c.t.Fatalf("rebuild %s: %d %s", projection, r.status, r.body)
	}
}

// reverse returns vs newest first, as the list shows orders placed in turn.
func reverse(vs []viewJSON) []viewJSON {
	out := make([]viewJSON, len(vs))
	for i, v := range vs {
		out[len(vs)-1-i] = v
	}
	return out
}

// GET /api/orders lists the caller's orders only, newest first, each as
// its owners say it is, with the customer's name and the payment status,
// in pages; POST /api/orders on the same path still places orders.
func TestShop_OrderListShowsTheCallersOrdersNewestFirst(t *testing.T) {
	s, c := startShop(t, t.TempDir())
	t.Cleanup(func() { stopShop(t, s) })
	admin, ann, bob := c.admin(), c.signUp("Ann"), c.signUp("Bob")
	mug := c.catalog()["MUG-001"]

	var annIDs []string
	for _, pay := range []string{"tok_ok", "tok_decline", "tok_ok"} {
		_, o := c.placeOrder(ann, mug.ID, 1, pay)
		annIDs = append(annIDs, o.ID)
	}
	choreo := c.placeChoreographed(ann, mug.ID, 2, "tok_ok")
	annIDs = append(annIDs, choreo.ID)
	_, bobs := c.placeOrder(bob, mug.ID, 1, "tok_ok")
	var annWant []viewJSON
	for _, id := range annIDs {
		c.settle(ann, id)
		annWant = append(annWant, c.truth(ann, "Ann", id))
	}
	c.settle(bob, bobs.ID)
	c.waitList(ann, reverse(annWant))
	c.waitList(bob, []viewJSON{c.truth(bob, "Bob", bobs.ID)})

	got, _ := c.listAll(ann, 100)
	for _, o := range got {
		if (o.Status == "CONFIRMED") != (o.PaymentStatus == "CAPTURED") || o.Shipment != nil || o.Items[0].Name == "" {
			t.Fatalf("listed order %+v", o)
		}
	}
	if got[2].Status != "CANCELLED" || got[2].Reason != "payment_declined" || got[2].PaymentStatus != "DECLINED" {
		t.Fatalf("declined order %+v", got[2])
	}

	paged, pages := c.listAll(ann, 3)
	if len(pages) != 2 || !reflect.DeepEqual(paged, got) {
		t.Fatalf("pages of 3: %d pages, %+v", len(pages), paged)
	}
	r := c.do("GET", "/api/orders", ann, nil)
	var page listJSON
	r.json(t, &page)
	if len(page.Orders) != 4 || page.NextCursor != "" {
		t.Fatalf("default page: %s", r.body)
	}

	for _, q := range []string{"limit=0", "limit=101", "limit=lots", "cursor=bogus"} {
		c.expectProblem(c.do("GET", "/api/orders?"+q, ann, nil), http.StatusBadRequest, q)
	}
	c.expectProblem(c.do("GET", "/api/orders", "", nil), http.StatusUnauthorized, "anonymous list")
	c.expectProblem(c.do("DELETE", "/api/orders", ann, nil), http.StatusMethodNotAllowed, "DELETE /api/orders")
	for _, path := range []string{"/admin/stats", "/admin/projections"} {
		c.expectProblem(c.do("GET", path, ann, nil), http.StatusForbidden, "a customer reads "+path)
	}
	c.expectProblem(c.do("POST", "/admin/projections/orderview/rebuild", ann, nil), http.StatusForbidden, "a customer rebuilds")

	// Analytics: 4 orders confirmed (3 orchestrated, 1 choreographed), one
	// declined, all in the hour (or two) of this test.
	c.waitProjections(admin, 1)
	var stats struct {
		OrdersPerHour []struct {
			Orders  int64 `json:"orders"`
			Revenue struct {
				Amount   int64  `json:"amount"`
				Currency string `json:"currency"`
			} `json:"revenue"`
		} `json:"orders_per_hour"`
		Cancellations []struct {
			Reason string `json:"reason"`
			Orders int64  `json:"orders"`
		} `json:"cancellations"`
		Sagas []struct {
			Saga       string `json:"saga"`
			Confirmed  int64  `json:"confirmed"`
			Cancelled  int64  `json:"cancelled"`
			DurationMS struct {
				Count int64 `json:"count"`
			} `json:"duration_ms"`
		} `json:"sagas"`
	}
	c.do("GET", "/admin/stats", admin, nil).json(t, &stats)
	var orders, revenue int64
	for _, h := range stats.OrdersPerHour {
		orders, revenue = orders+h.Orders, revenue+h.Revenue.Amount
	}
	if orders != 4 || revenue != 5*mug.Price.Amount {
		t.Fatalf("revenue: %d orders, %d cents, want 4 and %d: %+v", orders, revenue, 5*mug.Price.Amount, stats)
	}
	if len(stats.Cancellations) != 1 || stats.Cancellations[0].Reason != "payment_declined" || stats.Cancellations[0].Orders != 1 {
		t.Fatalf("cancellations %+v", stats.Cancellations)
	}
	if len(stats.Sagas) != 2 || stats.Sagas[0].Saga != "choreographed" || stats.Sagas[0].Confirmed != 1 ||
		stats.Sagas[1].Confirmed != 3 || stats.Sagas[1].Cancelled != 1 || stats.Sagas[1].DurationMS.Count != 4 {
		t.Fatalf("sagas %+v", stats.Sagas)
	}
}

// snapshot is everything the read models answer: every customer's list,
// page by page, and the statistics.
func (c client) snapshot(admin string, customers []string) []string {
	c.t.Helper()
	var out []string
	for _, tok := range customers {
		_, pages := c.listAll(tok, 2)
		out = append(out, pages...)
	}
	return append(out, string(c.do("GET", "/admin/stats", admin, nil).body))
}

// Rebuilt through the admin endpoint, the read models answer exactly as
// before.
func TestShop_RebuildThroughTheAdminEndpointConverges(t *testing.T) {
	s, c := startShop(t, t.TempDir())
	t.Cleanup(func() { stopShop(t, s) })
	admin := c.admin()
	mug := c.catalog()["MUG-001"]
	names := []string{"Ann", "Bob", "Cy"}
	var toks []string
	for i, name := range names {
		tok := c.signUp(name)
		toks = append(toks, tok)
		var want []viewJSON
		for j, pay := range []string{"tok_ok", "tok_decline", "tok_ok"} {
			_, o := c.placeOrder(tok, mug.ID, 1+j, pay)
			c.settle(tok, o.ID)
			if i == 0 && j == 0 {
				// Cancelled after confirmation: refunded.
				c.do("POST", "/api/orders/"+o.ID+"/cancel", tok, nil)
				c.waitStatus(tok, o.ID, "CANCELLED")
			}
			want = append(want, c.truth(tok, name, o.ID))
		}
		c.waitList(tok, reverse(want))
	}
	c.waitProjections(admin, 1)
	before := c.snapshot(admin, toks)

	c.expectProblem(c.do("POST", "/admin/projections/nothing/rebuild", admin, nil), http.StatusNotFound, "unknown projection")
	c.rebuild(admin, "orderview")
	c.rebuild(admin, "analytics")
	c.waitProjections(admin, 2)
	if after := c.snapshot(admin, toks); !reflect.DeepEqual(after, before) {
		t.Fatalf("after the rebuild:\n%v\nbefore:\n%v", after, before)
	}
}

// The read models are dropped while orders flow: the rebuild catches up
// with what was there and what came meanwhile, and ends where the orders'
// owners say they are.
func TestShop_ReadModelDroppedWhileOrdersFlowCatchesUp(t *testing.T) {
	s, c := startShop(t, t.TempDir())
	t.Cleanup(func() { stopShop(t, s) })
	admin := c.admin()
	mug := c.catalog()["MUG-001"]
	ann, bob := c.signUp("Ann"), c.signUp("Bob")
	tokens := map[string]string{ann: "Ann", bob: "Bob"}
	placed := map[string][]string{}
	place := func(n int) {
		for i := range n {
			tok := ann
			if i%2 == 1 {
				tok = bob
			}
			pay := "tok_ok"
			if i%3 == 2 {
				pay = "tok_decline"
			}
			_, o := c.placeOrder(tok, mug.ID, 1, pay)
			placed[tok] = append(placed[tok], o.ID)
		}
	}

	place(6)
	c.waitProjections(admin, 1)
	c.rebuild(admin, "orderview")
	c.rebuild(admin, "analytics")
	place(6) // while the streams replay
	c.rebuild(admin, "orderview")
	place(6)

	for tok, ids := range placed {
		var want []viewJSON
		for _, id := range ids {
			c.settle(tok, id)
		}
		for _, id := range ids {
			want = append(want, c.truth(tok, tokens[tok], id))
		}
		c.waitList(tok, reverse(want))
	}
	c.waitProjections(admin, 2)

	// And it converges for good: one more rebuild changes nothing.
	before := c.snapshot(admin, []string{ann, bob})
	c.rebuild(admin, "orderview")
	c.rebuild(admin, "analytics")
	c.waitProjections(admin, 3)
	if after := c.snapshot(admin, []string{ann, bob}); !reflect.DeepEqual(after, before) {
		t.Fatalf("after another rebuild:\n%v\nbefore:\n%v", after, before)
	}
}

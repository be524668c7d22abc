package e2e

import (
	"net/http"
	"testing"
)

// The BFF profiles through the shop: the web's aggregate of an order and
// the mobile app's compact one, each for its owner only.
func TestShop_BFFProfiles(t *testing.T) {
	s, c := startShop(t, t.TempDir())
	t.Cleanup(func() { stopShop(t, s) })
	ann, bob := c.signUp("Ann"), c.signUp("Bob")
	mug := c.catalog()["MUG-001"]
	_, o := c.placeOrder(ann, mug.ID, 3, "tok_ok")
	if got := c.settle(ann, o.ID); got.Status != "CONFIRMED" {
		t.Fatalf("order %+v", got)
	}

	var web struct {
		Order struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		} `json:"order"`
		Customer *struct {
			Name string `json:"name"`
		} `json:"customer"`
		Payments []struct {
			Status string `json:"status"`
		} `json:"payments"`
		Shipment any      `json:"shipment"`
		Degraded []string `json:"degraded"`
	}
	r := c.do("GET", "/bff/web/orders/"+o.ID, ann, nil)
	if r.status != http.StatusOK {
		t.Fatalf("web: %d %s", r.status, r.body)
	}
	r.json(t, &web)
	if web.Order.ID != o.ID || web.Order.Status != "CONFIRMED" || web.Customer == nil || web.Customer.Name != "Ann" ||
		len(web.Payments) != 1 || web.Payments[0].Status != "CAPTURED" || web.Shipment != nil || len(web.Degraded) != 0 {
		t.Fatalf("web aggregate: %s", r.body)
	}

	var mobile map[string]any
	r = c.do("GET", "/bff/mobile/orders/"+o.ID, ann, nil)
	if r.status != http.StatusOK {
		t.Fatalf("mobile: %d %s", r.status, r.body)
	}
	r.json(t, &mobile)
	if len(mobile) != 4 || mobile["id"] != o.ID || mobile["status"] != "CONFIRMED" || mobile["item_count"] != 3.0 || mobile["total"] == nil {
		t.Fatalf("mobile shape: %s", r.body)
	}

	c.expectProblem(c.do("GET", "/bff/web/orders/"+o.ID, bob, nil), http.StatusNotFound, "another customer's order")
	c.expectProblem(c.do("GET", "/bff/mobile/orders/"+o.ID, "", nil), http.StatusUnauthorized, "no token")
}

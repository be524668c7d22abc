package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

type orderJSON struct {
	ID         string `json:"id"`
	CustomerID string `json:"customer_id"`
	Status     string `json:"status"`
	Reason     string `json:"reason"`
	Items      []struct {
		ProductID string `json:"product_id"`
		Quantity  int64  `json:"quantity"`
	} `json:"items"`
	Total struct {
		Amount   int64  `json:"amount"`
		Currency string `json:"currency"`
	} `json:"total"`
	Saga    string `json:"saga"`
	Version int64  `json:"version"`
}

type paymentJSON struct {
	ID      string `json:"id"`
	OrderID string `json:"order_id"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Amount  struct {
		Amount int64 `json:"amount"`
	} `json:"amount"`
}

type productJSON struct {
	ID        string `json:"id"`
	SKU       string `json:"sku"`
	Available int64  `json:"available"`
	Price     struct {
		Amount int64 `json:"amount"`
	} `json:"price"`
}

// signUp registers a new customer and returns an access token.
func (c client) signUp(name string) string {
	c.t.Helper()
	email := strings.ToLower(name) + "-" + uuid.NewString()[:8] + "@example.com"
	if r := c.do("POST", "/api/customers", "", map[string]string{"email": email, "name": name, "password": "correct horse"}); r.status != 201 {
		c.t.Fatalf("register %s: %d %s", name, r.status, r.body)
	}
	r := c.do("POST", "/api/auth/login", "", map[string]string{"email": email, "password": "correct horse"})
	var tok token
	r.json(c.t, &tok)
	return tok.AccessToken
}

func (c client) catalog() map[string]productJSON {
	c.t.Helper()
	var ps []productJSON
	c.do("GET", "/api/products", "", nil).json(c.t, &ps)
	out := map[string]productJSON{}
	for _, p := range ps {
		out[p.SKU] = p
	}
	return out
}

func (c client) placeOrder(tok, productID string, qty int, payToken string, header ...string) (response, orderJSON) {
	c.t.Helper()
	r := c.do("POST", "/api/orders", tok, map[string]any{
		"items":   []map[string]any{{"product_id": productID, "quantity": qty}},
		"payment": map[string]string{"token": payToken},
	}, header...)
	var o orderJSON
	if r.status == http.StatusAccepted {
		r.json(c.t, &o)
	}
	return r, o
}

// settle polls the order until it leaves PENDING.
func (c client) settle(tok, id string) orderJSON {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var o orderJSON
		r := c.do("GET", "/api/orders/"+id, tok, nil)
		if r.status != 200 {
			c.t.Fatalf("get order %s: %d %s", id, r.status, r.body)
		}
		r.json(c.t, &o)
		if o.Status != "PENDING" {
			return o
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("order %s still PENDING", id)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c client) payments(tok, orderID string) []paymentJSON {
	c.t.Helper()
	var ps []paymentJSON
	r := c.do("GET", "/api/payments?order_id="+orderID, tok, nil)
	if r.status != 200 {
		c.t.Fatalf("payments of %s: %d %s", orderID, r.status, r.body)
	}
	r.json(c.t, &ps)
	return ps
}

func TestShop_OrdersThroughTheSaga(t *testing.T) {
	s, c := startShop(t, t.TempDir())
	t.Cleanup(func() { stopShop(t, s) })
	ann, bob := c.signUp("Ann"), c.signUp("Bob")
	before := c.catalog()
	mug, kbd := before["MUG-001"], before["KBD-001"]

	// Paid: CONFIRMED, stock taken once, one captured payment of the total.
	r, o := c.placeOrder(ann, mug.ID, 2, "tok_ok")
	if r.status != http.StatusAccepted || o.Status != "PENDING" || r.header.Get("Location") != "/api/orders/"+o.ID {
		t.Fatalf("place: %d %s", r.status, r.body)
	}
	if o.Total.Amount != 2*mug.Price.Amount || o.Total.Currency != "EUR" || o.Saga != "orchestrated" {
		t.Fatalf("priced from the catalog: %+v", o)
	}
	if got := c.settle(ann, o.ID); got.Status != "CONFIRMED" {
		t.Fatalf("tok_ok: %+v", got)
	}
	if got := c.catalog()["MUG-001"].Available; got != mug.Available-2 {
		t.Fatalf("mug stock %d, want %d", got, mug.Available-2)
	}
	ps := c.payments(ann, o.ID)
	if len(ps) != 1 || ps[0].Status != "CAPTURED" || ps[0].Amount.Amount != o.Total.Amount {
		t.Fatalf("payments of a confirmed order: %+v", ps)
	}

	// Declined: CANCELLED payment_declined, the reservation released.
	_, d := c.placeOrder(ann, mug.ID, 1, "tok_decline")
	if got := c.settle(ann, d.ID); got.Status != "CANCELLED" || got.Reason != "payment_declined" {
		t.Fatalf("tok_decline: %+v", got)
	}
	if got := c.catalog()["MUG-001"].Available; got != mug.Available-2 {
		t.Fatalf("after a declined order the mug stock is %d, want %d", got, mug.Available-2)
	}
	if ps := c.payments(ann, d.ID); len(ps) != 1 || ps[0].Status != "DECLINED" {
		t.Fatalf("payments of a declined order: %+v", ps)
	}

	// Out of stock: the scarce keyboard sells out, then the next order is refused.
	_, k := c.placeOrder(bob, kbd.ID, int(kbd.Available), "tok_ok")
	if got := c.settle(bob, k.ID); got.Status != "CONFIRMED" {
		t.Fatalf("last keyboards: %+v", got)
	}
	r, _ = c.placeOrder(bob, kbd.ID, 1, "tok_ok")
	c.expectProblem(r, http.StatusConflict, "sold out")
	if got := c.catalog()["KBD-001"].Available; got != 0 {
		t.Fatalf("keyboards left %d", got)
	}

	// Another customer's order is not found; so are its payments.
	c.expectProblem(c.do("GET", "/api/orders/"+o.ID, bob, nil), http.StatusNotFound, "another customer's order")
	if ps := c.payments(bob, o.ID); len(ps) != 0 {
		t.Fatalf("bob sees ann's payments: %+v", ps)
	}
	c.expectProblem(c.do("GET", "/api/orders/"+o.ID, "", nil), http.StatusUnauthorized, "anonymous")

	// Idempotency-Key: a retry returns the same order; another body with the key is refused.
	key := "Idempotency-Key"
	r1, first := c.placeOrder(ann, mug.ID, 1, "tok_ok", key, "retry-1")
	r2, again := c.placeOrder(ann, mug.ID, 1, "tok_ok", key, "retry-1")
	if r1.status != 202 || r2.status != 202 || first.ID == "" || again.ID != first.ID {
		t.Fatalf("replayed order: %s / %s", r1.body, r2.body)
	}
	r, _ = c.placeOrder(ann, mug.ID, 3, "tok_ok", key, "retry-1")
	c.expectProblem(r, http.StatusUnprocessableEntity, "same key, another body")
	c.settle(ann, first.ID)
	if got := c.catalog()["MUG-001"].Available; got != mug.Available-3 {
		t.Fatalf("the replay took stock twice: %d, want %d", got, mug.Available-3)
	}
}

func TestShop_OrderInputIsValidated(t *testing.T) {
	s, c := startShop(t, t.TempDir())
	t.Cleanup(func() { stopShop(t, s) })
	ann := c.signUp("Ann")
	mug := c.catalog()["MUG-001"]
	fiftyOne := make([]string, 51)
	for i := range fiftyOne {
		fiftyOne[i] = fmt.Sprintf(`{"product_id":%q,"quantity":1}`, uuid.NewString())
	}
	for name, body := range map[string]string{
		"malformed":        `{"items":[`,
		"unknown field":    `{"items":[],"price":1}`,
		"no items":         `{"items":[],"payment":{"token":"tok_ok"}}`,
		"negative":         `{"items":[{"product_id":"` + mug.ID + `","quantity":-1}],"payment":{"token":"tok_ok"}}`,
		"zero":             `{"items":[{"product_id":"` + mug.ID + `","quantity":0}],"payment":{"token":"tok_ok"}}`,
		"huge":             `{"items":[{"product_id":"` + mug.ID + `","quantity":1000000}],"payment":{"token":"tok_ok"}}`,
		"not a number":     `{"items":[{"product_id":"` + mug.ID + `","quantity":"two"}],"payment":{"token":"tok_ok"}}`,
		"51 lines":         `{"items":[` + strings.Join(fiftyOne, ",") + `],"payment":{"token":"tok_ok"}}`,
		"unknown product":  `{"items":[{"product_id":"` + uuid.NewString() + `","quantity":1}],"payment":{"token":"tok_ok"}}`,
		"not a product id": `{"items":[{"product_id":"mug","quantity":1}],"payment":{"token":"tok_ok"}}`,
		"no payment":       `{"items":[{"product_id":"` + mug.ID + `","quantity":1}]}`,
		"unknown saga":     `{"items":[{"product_id":"` + mug.ID + `","quantity":1}],"saga":"telepathic","payment":{"token":"tok_ok"}}`,
	} {
		c.expectProblem(c.do("POST", "/api/orders", ann, body), http.StatusBadRequest, name)
	}
	c.expectProblem(c.do("POST", "/api/orders", "", `{}`), http.StatusUnauthorized, "anonymous order")
	c.expectProblem(c.do("GET", "/api/orders/not-an-id", ann, nil), http.StatusNotFound, "malformed order id")
	c.expectProblem(c.do("GET", "/api/payments?order_id=nope", ann, nil), http.StatusBadRequest, "malformed order id for payments")
	if got := c.catalog()["MUG-001"].Available; got != mug.Available {
		t.Fatalf("refused orders took stock: %d, want %d", got, mug.Available)
	}
}

// A provider that errors rather than declines: the charge is retried with
// the same idempotency key until the provider recovers, and the order
// confirms with exactly one capture.
func TestShop_SagaRidesOutAFailingProvider(t *testing.T) {
	s, c := startShop(t, t.TempDir())
	t.Cleanup(func() { stopShop(t, s) })
	ann := c.signUp("Ann")
	mug := c.catalog()["MUG-001"]
	provider := s.Provider()

	provider.SetFailureRate(1)
	_, o := c.placeOrder(ann, mug.ID, 1, "tok_ok")
	// The payment step has started and keeps failing at the provider.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if ps := c.payments(ann, o.ID); len(ps) == 1 && ps[0].Status == "PENDING" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the charge never reached the provider")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := c.do("GET", "/api/orders/"+o.ID, ann, nil); !strings.Contains(string(got.body), `"PENDING"`) {
		t.Fatalf("with the provider failing the order must wait: %s", got.body)
	}
	provider.SetFailureRate(0)
	if got := c.settle(ann, o.ID); got.Status != "CONFIRMED" {
		t.Fatalf("after the provider recovered: %+v", got)
	}
	if n := provider.Captures(); n != 1 {
		t.Fatalf("%d captures, want 1", n)
	}
}

package paysim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/mercato-shop/mercato/external/paysim"
)

type reply struct {
	Status   int
	Replayed bool
	Body     map[string]any
}

// code is the provider error code of the reply, or "".
func (r reply) code() string {
	e, _ := r.Body["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func (r reply) str(key string) string {
	s, _ := r.Body[key].(string)
	return s
}

func start(t *testing.T) (*paysim.Simulator, string) {
	t.Helper()
	sim := paysim.New(paysim.Config{})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return sim, srv.URL
}

func do(t *testing.T, ctx context.Context, method, url, key string, body any) (reply, error) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set(paysim.IdempotencyHeader, key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	r := reply{Status: resp.StatusCode, Replayed: resp.Header.Get(paysim.ReplayedHeader) == "true"}
	if err := json.NewDecoder(resp.Body).Decode(&r.Body); err != nil {
		t.Fatalf("%s %s: %d, body is not JSON: %v", method, url, resp.StatusCode, err)
	}
	return r, nil
}

func post(t *testing.T, url, key string, body any) reply {
	t.Helper()
	r, err := do(t, context.Background(), http.MethodPost, url, key, body)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func get(t *testing.T, url string) reply {
	t.Helper()
	r, err := do(t, context.Background(), http.MethodGet, url, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func chargeBody(amount, source string) map[string]string {
	return map[string]string{"amount": amount, "currency": "eur", "source": source, "description": "order 1"}
}

func TestCharge_SameKeyCapturesOnceAndReplays(t *testing.T) {
	sim, url := start(t)
	first := post(t, url+"/v1/charges", "k1", chargeBody("12.34", paysim.TokenOK))
	if first.Status != http.StatusCreated || first.Replayed {
		t.Fatalf("first charge: %+v", first)
	}
	if first.str("object") != "charge" || first.str("status") != "succeeded" || first.str("amount") != "12.34" ||
		first.str("currency") != "eur" || first.Body["captured"] != true || len(first.str("id")) < 4 || first.str("id")[:3] != "ch_" {
		t.Fatalf("charge: %v", first.Body)
	}
	again := post(t, url+"/v1/charges", "k1", chargeBody("12.34", paysim.TokenOK))
	if again.Status != http.StatusCreated || !again.Replayed || again.str("id") != first.str("id") {
		t.Fatalf("replay: %+v, want the first response %v", again, first.Body)
	}
	if n := sim.Captures(); n != 1 {
		t.Fatalf("%d captures, want 1", n)
	}

	mismatch := post(t, url+"/v1/charges", "k1", chargeBody("99.00", paysim.TokenOK))
	if mismatch.Status != http.StatusConflict || mismatch.code() != "idempotency_mismatch" {
		t.Fatalf("same key, other body: %+v", mismatch)
	}
	if missing := post(t, url+"/v1/charges", "", chargeBody("1.00", paysim.TokenOK)); missing.Status != http.StatusBadRequest {
		t.Fatalf("no key: %+v", missing)
	}
	if other := post(t, url+"/v1/charges", "k2", chargeBody("12.34", paysim.TokenOK)); other.Status != http.StatusCreated || other.str("id") == first.str("id") {
		t.Fatalf("new key: %+v", other)
	}
	if n := sim.Captures(); n != 2 {
		t.Fatalf("%d captures, want 2", n)
	}
	got := get(t, url+"/v1/charges/"+first.str("id"))
	if got.Status != http.StatusOK || got.str("id") != first.str("id") || got.str("amount") != "12.34" {
		t.Fatalf("get charge: %+v", got)
	}
	if nf := get(t, url+"/v1/charges/ch_missing"); nf.Status != http.StatusNotFound || nf.code() != "resource_missing" {
		t.Fatalf("unknown charge: %+v", nf)
	}
}

func TestCharge_ConcurrentRequestsWithOneKeyCaptureOnce(t *testing.T) {
	sim, url := start(t)
	const n = 20
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r, err := do(t, context.Background(), http.MethodPost, url+"/v1/charges", "same", chargeBody("5.00", paysim.TokenOK))
			if err != nil || r.Status != http.StatusCreated {
				t.Errorf("request %d: %+v %v", i, r, err)
				return
			}
			ids[i] = r.str("id")
		})
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("charge ids differ: %v", ids)
		}
	}
	if c := sim.Captures(); c != 1 {
		t.Fatalf("%d captures, want 1", c)
	}
}

func TestCharge_DeclineErrorAndInvalidRequests(t *testing.T) {
	sim, url := start(t)
	declined := post(t, url+"/v1/charges", "d1", chargeBody("10.00", paysim.TokenDecline))
	errBody, _ := declined.Body["error"].(map[string]any)
	if declined.Status != http.StatusPaymentRequired || declined.code() != "card_declined" || errBody["type"] != "card_error" {
		t.Fatalf("decline: %+v", declined)
	}
	chargeID, _ := errBody["charge"].(string)
	if got := get(t, url+"/v1/charges/"+chargeID); got.str("status") != "failed" || got.Body["captured"] != false {
		t.Fatalf("declined charge: %+v", got)
	}
	if again := post(t, url+"/v1/charges", "d1", chargeBody("10.00", paysim.TokenDecline)); again.Status != http.StatusPaymentRequired || !again.Replayed {
		t.Fatalf("replayed decline: %+v", again)
	}

	for range 2 { // a broken provider answers the same every time, key or not
		r := post(t, url+"/v1/charges", "e1", chargeBody("10.00", paysim.TokenError))
		if r.Status != http.StatusInternalServerError || r.code() != "processing_error" || r.Replayed {
			t.Fatalf("tok_error: %+v", r)
		}
	}

	if r := post(t, url+"/v1/charges", "u1", chargeBody("10.00", "tok_unknown")); r.Status != http.StatusBadRequest || r.code() != "invalid_source" {
		t.Fatalf("unknown source: %+v", r)
	}
	for _, amount := range []string{"", "0", "0.00", "12.345", "-1.00", "+1", "1e3", "12.", ".5", "1,00", "abc", "99999999999999999999"} {
		if r := post(t, url+"/v1/charges", "a-"+amount, chargeBody(amount, paysim.TokenOK)); r.Status != http.StatusBadRequest || r.code() != "invalid_amount" {
			t.Errorf("amount %q: %+v", amount, r)
		}
	}
	if r := post(t, url+"/v1/charges", "c1", map[string]string{"amount": "1.00", "currency": "EUR", "source": paysim.TokenOK}); r.code() != "invalid_currency" {
		t.Fatalf("upper-case currency: %+v", r)
	}
	// A refused request is not saved: the key works once the request is fixed.
	if r := post(t, url+"/v1/charges", "a-12.345", chargeBody("12.34", paysim.TokenOK)); r.Status != http.StatusCreated {
		t.Fatalf("corrected request: %+v", r)
	}
	if n := sim.Captures(); n != 1 {
		t.Fatalf("%d captures, want 1", n)
	}
}

func TestRefund_Rules(t *testing.T) {
	sim, url := start(t)
	ch := post(t, url+"/v1/charges", "c1", chargeBody("12.34", paysim.TokenOK)).str("id")

	if r := post(t, url+"/v1/refunds", "r0", map[string]string{"charge": "ch_nope", "amount": "1.00"}); r.Status != http.StatusNotFound || r.code() != "resource_missing" {
		t.Fatalf("unknown charge: %+v", r)
	}
	if r := post(t, url+"/v1/refunds", "r1", map[string]string{"charge": ch, "amount": "12.35"}); r.Status != http.StatusBadRequest || r.code() != "amount_too_large" {
		t.Fatalf("too large: %+v", r)
	}
	part := post(t, url+"/v1/refunds", "r2", map[string]string{"charge": ch, "amount": "2.34"})
	if part.Status != http.StatusCreated || part.str("object") != "refund" || part.str("status") != "succeeded" ||
		part.str("charge") != ch || part.str("amount") != "2.34" || part.str("id")[:3] != "re_" {
		t.Fatalf("partial refund: %+v", part)
	}
	if again := post(t, url+"/v1/refunds", "r2", map[string]string{"charge": ch, "amount": "2.34"}); !again.Replayed || again.str("id") != part.str("id") {
		t.Fatalf("replayed refund: %+v", again)
	}
	if r := post(t, url+"/v1/refunds", "r3", map[string]string{"charge": ch, "amount": "10.01"}); r.code() != "amount_too_large" {
		t.Fatalf("more than is left: %+v", r)
	}
	rest := post(t, url+"/v1/refunds", "r4", map[string]string{"charge": ch})
	if rest.Status != http.StatusCreated || rest.str("amount") != "10.00" {
		t.Fatalf("refund of the rest: %+v", rest)
	}
	if c := get(t, url+"/v1/charges/"+ch); c.str("amount_refunded") != "12.34" || c.Body["refunded"] != true {
		t.Fatalf("charge after refunds: %+v", c)
	}
	if n := sim.Refunds(); n != 2 {
		t.Fatalf("%d refunds, want 2", n)
	}

	declined := post(t, url+"/v1/charges", "c2", chargeBody("5.00", paysim.TokenDecline))
	e, _ := declined.Body["error"].(map[string]any)
	if r := post(t, url+"/v1/refunds", "r5", map[string]string{"charge": e["charge"].(string), "amount": "5.00"}); r.code() != "amount_too_large" {
		t.Fatalf("refund of a declined charge: %+v", r)
	}
}

func TestFaultSwitches(t *testing.T) {
	sim, url := start(t)
	sim.SetFailureRate(1)
	for _, path := range []string{"/v1/charges", "/v1/refunds"} {
		r := post(t, url+path, "k1", chargeBody("1.00", paysim.TokenOK))
		if r.Status != http.StatusInternalServerError || r.code() != "processing_error" {
			t.Fatalf("%s with failure rate 1: %+v", path, r)
		}
	}
	sim.SetFailureRate(0)
	// The failures did nothing and saved nothing: the same key now charges.
	if r := post(t, url+"/v1/charges", "k1", chargeBody("1.00", paysim.TokenOK)); r.Status != http.StatusCreated || r.Replayed {
		t.Fatalf("after the failures: %+v", r)
	}

	sim.SetLatency(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := do(t, ctx, http.MethodPost, url+"/v1/charges", "k2", chargeBody("1.00", paysim.TokenOK))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow provider: got %v, want the client's deadline", err)
	}
	sim.SetLatency(0)
	if r := post(t, url+"/v1/charges", "k2", chargeBody("1.00", paysim.TokenOK)); r.Status != http.StatusCreated || r.Replayed {
		t.Fatalf("a request canceled during the delay must have done nothing: %+v", r)
	}
	if n := sim.Captures(); n != 2 {
		t.Fatalf("%d captures, want 2", n)
	}
}

func TestSimulator_ListensOnItsOwn(t *testing.T) {
	sim := paysim.New(paysim.Config{})
	if sim.URL() != "" {
		t.Fatal("URL before Start")
	}
	if err := sim.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if r := post(t, sim.URL()+"/v1/charges", "k", chargeBody("3.00", paysim.TokenOK)); r.Status != http.StatusCreated {
		t.Fatalf("charge: %+v", r)
	}
	if err := sim.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(sim.URL() + "/v1/charges/x"); err == nil {
		t.Fatal("still serving after Stop")
	}
}

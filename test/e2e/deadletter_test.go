package e2e

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mercato-shop/mercato/deploy"
	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/shop"
)

type deadLetterJSON struct {
	Seq      uint64 `json:"seq"`
	Subject  string `json:"subject"`
	Consumer string `json:"consumer"`
	Reason   string `json:"reason"`
	Type     string `json:"type"`
}

func (c client) deadLetters(admin string) []deadLetterJSON {
	c.t.Helper()
	r := c.do("GET", "/admin/deadletters", admin, nil)
	if r.status != http.StatusOK {
		c.t.Fatalf("dead letters: %d %s", r.status, r.body)
	}
	var out struct {
		DeadLetters []deadLetterJSON `json:"dead_letters"`
	}
	r.json(c.t, &out)
	return out.DeadLetters
}

// withoutProviderBreaker runs the shop with the shipped policies but a
// provider breaker that never opens, for tests of what happens without it:
// TestShop_ProviderBreakerCancelsOrdersAndRecovers shows what it does.
func withoutProviderBreaker(t *testing.T) func(*shop.Config) {
	t.Helper()
	policies := strings.Replace(string(deploy.Resilience()), "min_calls: 10", "min_calls: 1000000", 1)
	if policies == string(deploy.Resilience()) {
		t.Fatal("the shipped policy file has no provider min_calls of 10 to raise")
	}
	return func(cfg *shop.Config) { cfg.Resilience = []byte(policies) }
}

func (c client) admin() string {
	c.t.Helper()
	var tok token
	c.do("POST", "/api/auth/login", "", map[string]string{"email": "admin@mercato.local", "password": "admin password"}).json(c.t, &tok)
	return tok.AccessToken
}

// A poison command and one the provider keeps failing both end in the dead
// letters with their reasons; the queue keeps flowing; replayed once the
// fault is fixed, the failed charge settles its order.
func TestShop_DeadLettersAndReplay(t *testing.T) {
	// The provider's breaker would fail the replayed charge fast: this test
	// is about the retries that end in the dead letters.
	s, c := startShop(t, t.TempDir(), withoutProviderBreaker(t), func(cfg *shop.Config) {
		cfg.PaymentAttempts = 3
		cfg.PaymentBackoff = []time.Duration{10 * time.Millisecond}
		cfg.SagaRetry = time.Hour // only the replay may bring the charge back
		cfg.StepTimeout = time.Hour
	})
	t.Cleanup(func() { stopShop(t, s) })
	admin, ann := c.admin(), c.signUp("Ann")
	mug := c.catalog()["MUG-001"]
	c.expectProblem(c.do("GET", "/admin/deadletters", ann, nil), http.StatusForbidden, "a customer reads dead letters")

	// A poison message: a charge command that is not a ChargePayment.
	nc, err := nats.Connect(s.BrokerURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	msg := nats.NewMsg("payment.cmd.charge")
	msg.Header.Set(bus.HeaderType, "payment.cmd.charge")
	msg.Header.Set(bus.HeaderID, "poison-1")
	msg.Data = []byte("\xff\xff not protobuf")
	js, _ := nc.JetStream()
	if _, err := js.PublishMsg(msg); err != nil {
		t.Fatal(err)
	}

	// A charge the provider fails every time.
	s.Provider().SetFailureRate(1)
	_, failed := c.placeOrder(ann, mug.ID, 1, "tok_ok")
	var dls []deadLetterJSON
	deadline := time.Now().Add(20 * time.Second)
	for len(dls) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("dead letters: %+v", dls)
		}
		time.Sleep(20 * time.Millisecond)
		dls = c.deadLetters(admin)
	}
	reasons := ""
	for _, d := range dls {
		if d.Consumer != "payment-processing" || d.Type != "payment.cmd.charge" || d.Reason == "" {
			t.Fatalf("dead letter %+v", d)
		}
		reasons += d.Reason + "\n"
	}
	if !strings.Contains(reasons, "poison") || !strings.Contains(reasons, "provider") {
		t.Fatalf("reasons should name the poison and the provider failure:\n%s", reasons)
	}

	// The queue keeps flowing: with the provider fixed, a new order confirms
	// while the failed one still waits.
	s.Provider().SetFailureRate(0)
	_, next := c.placeOrder(ann, mug.ID, 1, "tok_ok")
	if got := c.settle(ann, next.ID); got.Status != "CONFIRMED" {
		t.Fatalf("next order %+v", got)
	}
	if got := c.do("GET", "/api/orders/"+failed.ID, ann, nil); !strings.Contains(string(got.body), `"PENDING"`) {
		t.Fatalf("the failed order should wait for the replay: %s", got.body)
	}

	// Replay everything: the charge settles the order; the poison dies again.
	r := c.do("POST", "/admin/deadletters/replay", admin, nil)
	if r.status != http.StatusAccepted {
		t.Fatalf("replay: %d %s", r.status, r.body)
	}
	if got := c.settle(ann, failed.ID); got.Status != "CONFIRMED" {
		t.Fatalf("replayed order %+v", got)
	}
	if n := s.Provider().Captures(); n != 2 {
		t.Fatalf("%d captures, want 2", n)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		dls = c.deadLetters(admin)
		if len(dls) == 1 && strings.Contains(dls[0].Reason, "poison") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after replay the poison alone should be back: %+v", dls)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r := c.do("DELETE", "/admin/deadletters/"+strconv.FormatUint(dls[0].Seq, 10), admin, nil); r.status != http.StatusNoContent {
		t.Fatalf("discard: %d %s", r.status, r.body)
	}
	if dls = c.deadLetters(admin); len(dls) != 0 {
		t.Fatalf("after discard: %+v", dls)
	}
}

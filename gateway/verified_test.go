package gateway

import (
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mercato-shop/mercato/platform/web"
)

// clock is a settable time source.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// countingAuth is an authenticator over keys whose keyfunc counts its calls,
// with the verified cache on clock c.
func countingAuth(t *testing.T, keys *signer, c *clock, size int) (*authenticator, *atomic.Int64) {
	t.Helper()
	var calls atomic.Int64
	kf := keys.jwksKeyfunc(t)
	a := newAuthenticator(JWTConfig{Issuer: "mercato", Audience: "mercato"}, func(tok *jwt.Token) (any, error) {
		calls.Add(1)
		return kf(tok)
	})
	a.verified = newVerified(size, time.Minute, c.now)
	return a, &calls
}

func bearer(t *testing.T, raw string) *http.Request {
	t.Helper()
	r, err := http.NewRequest(http.MethodGet, "/", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Authorization", "Bearer "+raw)
	return r
}

func TestVerified_ATokenIsCheckedOnceThenRemembered(t *testing.T) {
	keys := newSigner(t, "k1")
	c := &clock{t: time.Now()}
	a, calls := countingAuth(t, keys, c, 10)
	raw := keys.sign(t, claimsFor("c-1", "customer", "admin"))

	for range 3 {
		caller, err := a.verify(bearer(t, raw))
		if err != nil {
			t.Fatalf("verify: %v", err)
		}
		if want := (web.Caller{Subject: "c-1", Roles: []string{"customer", "admin"}}); caller.Subject != want.Subject || !slices.Equal(caller.Roles, want.Roles) {
			t.Fatalf("caller = %+v, want %+v", caller, want)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("the key set was consulted %d times for one token, want once", n)
	}
}

func TestVerified_RefusalsAreNotRemembered(t *testing.T) {
	keys, other := newSigner(t, "k1"), newSigner(t, "k1")
	a, calls := countingAuth(t, keys, &clock{t: time.Now()}, 10)
	forged := other.sign(t, claimsFor("c-1", "customer"))
	for range 2 {
		if _, err := a.verify(bearer(t, forged)); err == nil {
			t.Fatal("a token signed by an unknown key was accepted")
		}
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("keyfunc calls = %d, want 2: a refused token is checked again in full", n)
	}
	if n := len(a.verified.callers); n != 0 {
		t.Fatalf("the cache holds %d entries after refusals only", n)
	}
}

func TestVerified_AnExpiredTokenIsRefusedEvenWhenRemembered(t *testing.T) {
	keys := newSigner(t, "k1")
	start := time.Now()
	c := &clock{t: start}
	a, _ := countingAuth(t, keys, c, 10)
	claims := claimsFor("c-1", "customer")
	claims["exp"] = start.Add(30 * time.Second).Unix()
	raw := keys.sign(t, claims)
	if _, err := a.verify(bearer(t, raw)); err != nil {
		t.Fatalf("verify: %v", err)
	}

	// The entry ends at exp, before the cache's one-minute TTL.
	c.t = start.Add(31 * time.Second)
	if _, ok := a.verified.get(raw); ok {
		t.Fatal("the cache still answers for a token past its exp")
	}
}

func TestVerified_EntriesEndAfterTheTTL(t *testing.T) {
	keys := newSigner(t, "k1")
	start := time.Now()
	c := &clock{t: start}
	a, calls := countingAuth(t, keys, c, 10)
	raw := keys.sign(t, claimsFor("c-1", "customer")) // exp in an hour
	if _, err := a.verify(bearer(t, raw)); err != nil {
		t.Fatalf("verify: %v", err)
	}
	c.t = start.Add(time.Minute + time.Second)
	if _, ok := a.verified.get(raw); ok {
		t.Fatal("the cache answers after its TTL")
	}
	// The real clock is still inside the token's hour: verified again in full.
	if _, err := a.verify(bearer(t, raw)); err != nil {
		t.Fatalf("verify after TTL: %v", err)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("keyfunc calls = %d, want 2", n)
	}
}

func TestVerified_SizeIsBounded(t *testing.T) {
	keys := newSigner(t, "k1")
	a, _ := countingAuth(t, keys, &clock{t: time.Now()}, 3)
	var raws []string
	for i := range 5 {
		raw := keys.sign(t, claimsFor("c-"+string(rune('a'+i)), "customer"))
		raws = append(raws, raw)
		if _, err := a.verify(bearer(t, raw)); err != nil {
			t.Fatalf("verify: %v", err)
		}
		if n := len(a.verified.callers); n > 3 {
			t.Fatalf("cache holds %d entries, bound is 3", n)
		}
	}
	// The newest token is always kept.
	if _, ok := a.verified.get(raws[4]); !ok {
		t.Fatal("the token just verified is not in the cache")
	}
}

func TestVerified_AChangedTokenIsAMiss(t *testing.T) {
	keys := newSigner(t, "k1")
	a, _ := countingAuth(t, keys, &clock{t: time.Now()}, 10)
	raw := keys.sign(t, claimsFor("c-1", "customer"))
	if _, err := a.verify(bearer(t, raw)); err != nil {
		t.Fatalf("verify: %v", err)
	}
	tampered := tamper(t, raw, func(c jwt.MapClaims) { c["roles"] = []string{"admin"} })
	if _, err := a.verify(bearer(t, tampered)); err == nil {
		t.Fatal("a tampered copy of a remembered token was accepted")
	}
}

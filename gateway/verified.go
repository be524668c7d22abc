package gateway

import (
	"sync"
	"time"

	"github.com/mercato-shop/mercato/platform/web"
)

// Bounds of the verified-token cache. A minute bounds how long a token
// stays accepted after its signing key is withdrawn from the key set; ten
// thousand callers polling at once fit.
const (
	verifiedSize = 10_000
	verifiedTTL  = time.Minute
)

// verified remembers tokens whose signature and claims checked out, until
// the earlier of their expiry and a TTL. Only successes are kept: refusals
// are cheap to repeat and would let anyone fill the cache with junk. Keys
// are the exact token strings, so a changed byte is a miss and verified in
// full.
type verified struct {
	size int
	ttl  time.Duration
	now  func() time.Time

	mu      sync.Mutex
	callers map[string]verifiedEntry
}

type verifiedEntry struct {
	caller web.Caller
	until  time.Time
}

func newVerified(size int, ttl time.Duration, now func() time.Time) *verified {
	return &verified{size: size, ttl: ttl, now: now, callers: make(map[string]verifiedEntry)}
}

// get returns the caller of a token verified before and still in date.
func (v *verified) get(token string) (web.Caller, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.callers[token]
	if !ok {
		return web.Caller{}, false
	}
	if !v.now().Before(e.until) {
		delete(v.callers, token)
		return web.Caller{}, false
	}
	return e.caller, true
}

// put remembers a verified token until exp, or the TTL if that ends first.
// When the cache is full, expired entries go first, then arbitrary ones.
func (v *verified) put(token string, caller web.Caller, exp time.Time) {
	now := v.now()
	until := now.Add(v.ttl)
	if exp.Before(until) {
		until = exp
	}
	if !now.Before(until) {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.callers[token]; !ok && len(v.callers) >= v.size {
		v.evict(now)
	}
	v.callers[token] = verifiedEntry{caller: caller, until: until}
}

// evict makes room for one entry. Sweeping every expired entry at once
// keeps the cost of a full cache spread over many puts.
func (v *verified) evict(now time.Time) {
	for k, e := range v.callers {
		if !now.Before(e.until) {
			delete(v.callers, k)
		}
	}
	for k := range v.callers {
		if len(v.callers) < v.size {
			return
		}
		delete(v.callers, k)
	}
}

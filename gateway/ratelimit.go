package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"go.yaml.in/yaml/v3"

	"github.com/mercato-shop/mercato/platform/web"
)

// Limit is a rate with a burst: Rate requests per Period on average, up to
// Burst at once. Zero is no limit.
type Limit struct {
	Rate   int
	Period time.Duration
	Burst  int
}

// Off reports whether l limits nothing.
func (l Limit) Off() bool { return l.Rate == 0 }

// String writes l as it is configured: "100/minute burst 20".
func (l Limit) String() string {
	if l.Off() {
		return "off"
	}
	unit := map[time.Duration]string{time.Second: "second", time.Minute: "minute", time.Hour: "hour"}[l.Period]
	return fmt.Sprintf("%d/%s burst %d", l.Rate, unit, l.Burst)
}

// ParseLimit reads "N/second", "N/minute" or "N/hour", optionally followed
// by "burst B" (default N: the whole allowance at once), or "off".
func ParseLimit(s string) (Limit, error) {
	fields := strings.Fields(s)
	if len(fields) == 1 && fields[0] == "off" {
		return Limit{}, nil
	}
	if len(fields) != 1 && (len(fields) != 3 || fields[1] != "burst") {
		return Limit{}, fmt.Errorf("rate limit %q must be N/second, N/minute or N/hour, then optionally burst B, or off", s)
	}
	n, unit, ok := strings.Cut(fields[0], "/")
	rate, err := strconv.Atoi(n)
	if !ok || err != nil || rate <= 0 || rate > 1_000_000 {
		return Limit{}, fmt.Errorf("rate limit %q: the rate must be a whole number from 1 to 1000000", s)
	}
	l := Limit{Rate: rate, Burst: rate}
	switch unit {
	case "second":
		l.Period = time.Second
	case "minute":
		l.Period = time.Minute
	case "hour":
		l.Period = time.Hour
	default:
		return Limit{}, fmt.Errorf("rate limit %q: the unit must be second, minute or hour", s)
	}
	if len(fields) == 3 {
		if l.Burst, err = strconv.Atoi(fields[2]); err != nil || l.Burst <= 0 || l.Burst > 1_000_000 {
			return Limit{}, fmt.Errorf("rate limit %q: the burst must be a whole number from 1 to 1000000", s)
		}
	}
	return l, nil
}

// UnmarshalYAML reads a limit written as ParseLimit reads it.
func (l *Limit) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("a rate limit is written as N/second, N/minute or N/hour, then optionally burst B, or off")
	}
	parsed, err := ParseLimit(n.Value)
	if err != nil {
		return err
	}
	*l = parsed
	return nil
}

// decision is a limiter's answer to one request.
type decision struct {
	allowed bool
	// remaining is how many more requests would be allowed right now.
	remaining int
	// retryAfter is how long until the next request is allowed, when this
	// one was not.
	retryAfter time.Duration
	// resetAfter is how long until the caller's allowance is whole again.
	resetAfter time.Duration
}

// limiterStore keeps the callers' allowances. Both stores run the generic
// cell rate algorithm (GCRA), so they answer alike.
type limiterStore interface {
	allow(ctx context.Context, key string, l Limit) (decision, error)
}

// memoryStore keeps allowances in this process: the default, right for one
// gateway instance.
type memoryStore struct {
	now func() time.Time

	mu sync.Mutex
	// tat is each key's theoretical arrival time: when its allowance will
	// be whole again. A key whose tat has passed is the same as no key.
	tat       map[string]time.Time
	lastSweep time.Time
}

func newMemoryStore(now func() time.Time) *memoryStore {
	return &memoryStore{now: now, tat: map[string]time.Time{}, lastSweep: now()}
}

// sweepEvery bounds how long keys whose allowance is whole again are kept.
const sweepEvery = time.Minute

func (m *memoryStore) allow(_ context.Context, key string, l Limit) (decision, error) {
	now := m.now()
	interval := l.Period / time.Duration(l.Rate) // one request's share of the period
	m.mu.Lock()
	defer m.mu.Unlock()
	if now.Sub(m.lastSweep) > sweepEvery {
		for k, t := range m.tat {
			if !t.After(now) {
				delete(m.tat, k)
			}
		}
		m.lastSweep = now
	}
	tat, ok := m.tat[key]
	if !ok || tat.Before(now) {
		tat = now
	}
	next := tat.Add(interval)
	// The request fits if, once it is counted, no more than the burst is
	// owed ahead of now.
	ahead := now.Sub(next.Add(-interval * time.Duration(l.Burst)))
	if ahead < 0 {
		return decision{retryAfter: -ahead, resetAfter: tat.Sub(now)}, nil
	}
	m.tat[key] = next
	return decision{allowed: true, remaining: int(ahead / interval), resetAfter: next.Sub(now)}, nil
}

// redisStore keeps allowances in Redis, shared by every gateway instance
// that uses the same server: together they enforce one limit. The GCRA
// runs in Redis as one Lua script (github.com/go-redis/redis_rate), with
// Redis's clock, so instances need not agree on the time.
type redisStore struct {
	limiter *redis_rate.Limiter
	prefix  string
}

func newRedisStore(client redis.UniversalClient, prefix string) *redisStore {
	return &redisStore{limiter: redis_rate.NewLimiter(client), prefix: prefix}
}

// storeTimeout bounds one exchange with the shared store.
const storeTimeout = 100 * time.Millisecond

func (s *redisStore) allow(ctx context.Context, key string, l Limit) (decision, error) {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	res, err := s.limiter.Allow(ctx, s.prefix+key, redis_rate.Limit{Rate: l.Rate, Burst: l.Burst, Period: l.Period})
	if err != nil {
		return decision{}, fmt.Errorf("rate limit store: %w", err)
	}
	return decision{allowed: res.Allowed > 0, remaining: res.Remaining, retryAfter: res.RetryAfter, resetAfter: res.ResetAfter}, nil
}

// limiter applies the routes' limits, per route and caller.
type limiter struct {
	store  limiterStore
	logger *slog.Logger
	// lastFailure is when a store failure was last logged (unix nanos): a
	// store that is down would otherwise log once per request.
	lastFailure atomic.Int64
}

// allow answers whether the request may go on; when not, it has written
// the 429. Every limited answer carries the policy and what is left of it
// (draft-ietf-httpapi-ratelimit-headers-10). A store that fails lets the
// request through: the limit protects the shop, and an outage of Redis
// must not become an outage of the shop.
func (lm *limiter) allow(w http.ResponseWriter, r *http.Request, route Route, caller string) bool {
	l := route.RateLimit
	if l.Off() {
		return true
	}
	d, err := lm.store.allow(r.Context(), route.name+"|"+caller, l)
	if err != nil {
		now := time.Now().UnixNano()
		if last := lm.lastFailure.Load(); now-last > int64(10*time.Second) && lm.lastFailure.CompareAndSwap(last, now) {
			lm.logger.WarnContext(r.Context(), "rate limit store failed; requests pass unlimited", "err", err)
		}
		return true
	}
	h := w.Header()
	h.Set("RateLimit-Policy", fmt.Sprintf(`"route";q=%d;w=%d`, l.Rate, int(l.Period/time.Second)))
	h.Set("RateLimit", fmt.Sprintf(`"route";r=%d;t=%d`, d.remaining, seconds(d.resetAfter)))
	if d.allowed {
		return true
	}
	h.Set("Retry-After", strconv.Itoa(max(1, seconds(d.retryAfter))))
	web.Error(w, r, http.StatusTooManyRequests, "too many requests to "+route.name+"; retry after the time in Retry-After")
	return false
}

// seconds rounds d up to whole seconds.
func seconds(d time.Duration) int { return int(math.Ceil(d.Seconds())) }

// clientKey is whom an anonymous request is limited as: its address, or
// for IPv6 its /64, since one host commonly holds a whole /64 and could
// otherwise take a new allowance with every address.
func clientKey(r *http.Request) string {
	ip, err := netip.ParseAddr(clientIP(r))
	if err != nil || ip.Unmap().Is4() {
		return "ip:" + clientIP(r)
	}
	p, err := ip.Prefix(64)
	if err != nil {
		return "ip:" + clientIP(r)
	}
	return "net:" + p.String()
}

// clientIP is the address the request came from. X-Forwarded-For is not
// read: a client can write anything there.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

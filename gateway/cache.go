package gateway

import (
	"bytes"
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"
	"golang.org/x/net/http/httpguts"

	"github.com/mercato-shop/mercato/platform/web"
)

// Response caching at the edge: GET routes that opt in are answered from
// memory for a while, so a hot catalog page costs its upstream one call per
// TTL instead of one per visitor.

const (
	defaultMaxEntryBytes = 256 << 10
	// maxEntryLimit caps max_entry_bytes: every miss in flight buffers up to
	// that much while its answer streams to the client.
	maxEntryLimit = 16 << 20
	maxCacheTTL   = 24 * time.Hour
)

// CacheConfig is a route's cache: the `cache:` value of a route.
type CacheConfig struct {
	// TTL is the longest an answer is served from the cache; the
	// upstream's Cache-Control can shorten it, never lengthen it.
	TTL time.Duration
	// Vary names the request headers, canonicalized, whose values are part
	// of the key: Authorization keeps one entry per caller.
	Vary []string
	// MaxEntryBytes bounds a stored body; larger answers pass through.
	MaxEntryBytes int64
}

// parseCacheConfig reads a route's cache: a duration ("30s") or a mapping
// {ttl: 30s, vary: [Authorization], max_entry_bytes: 65536}.
func parseCacheConfig(n *yaml.Node) (CacheConfig, error) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	cfg := CacheConfig{MaxEntryBytes: defaultMaxEntryBytes}
	switch n.Kind {
	case yaml.ScalarNode:
		ttl, err := parseCacheTTL(n.Value)
		if err != nil {
			return CacheConfig{}, err
		}
		cfg.TTL = ttl
		return cfg, nil
	case yaml.MappingNode:
	default:
		return CacheConfig{}, errors.New("cache is a duration (30s) or a mapping with ttl, vary and max_entry_bytes")
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i].Value, n.Content[i+1]
		if seen[k] {
			return CacheConfig{}, fmt.Errorf("cache: %s is set twice", k)
		}
		seen[k] = true
		switch k {
		case "ttl":
			if v.Kind != yaml.ScalarNode {
				return CacheConfig{}, errors.New("cache: ttl is a duration such as 30s")
			}
			ttl, err := parseCacheTTL(v.Value)
			if err != nil {
				return CacheConfig{}, err
			}
			cfg.TTL = ttl
		case "vary":
			if v.Kind != yaml.SequenceNode {
				return CacheConfig{}, errors.New("cache: vary is a list of request header names")
			}
			for _, h := range v.Content {
				if h.Kind != yaml.ScalarNode || !httpguts.ValidHeaderFieldName(h.Value) || h.Value == "*" {
					return CacheConfig{}, fmt.Errorf("cache: vary: %q is not a header name", h.Value)
				}
				if name := http.CanonicalHeaderKey(h.Value); !slices.Contains(cfg.Vary, name) {
					cfg.Vary = append(cfg.Vary, name)
				}
			}
		case "max_entry_bytes":
			b, err := strconv.ParseInt(v.Value, 10, 64)
			if v.Kind != yaml.ScalarNode || err != nil || b <= 0 || b > maxEntryLimit {
				return CacheConfig{}, fmt.Errorf("cache: max_entry_bytes %q must be a whole number from 1 to %d", v.Value, maxEntryLimit)
			}
			cfg.MaxEntryBytes = b
		default:
			return CacheConfig{}, fmt.Errorf("cache: unknown key %q (ttl, vary, max_entry_bytes)", k)
		}
	}
	if !seen["ttl"] {
		return CacheConfig{}, errors.New("cache: ttl is required")
	}
	return cfg, nil
}

func parseCacheTTL(s string) (time.Duration, error) {
	ttl, err := time.ParseDuration(s)
	if err != nil || ttl <= 0 || ttl > maxCacheTTL {
		return 0, fmt.Errorf("cache: ttl %q must be a duration above 0s and at most 24h", s)
	}
	return ttl, nil
}

// responseCache holds answers of cached routes, within a total byte budget,
// evicting the least recently used first.
type responseCache struct {
	now func() time.Time
	max int64

	mu      sync.Mutex
	entries map[string]*list.Element // values are *cacheEntry
	lru     *list.List               // most recently used at the front
	size    int64
	flights map[string]*flight
	// gen changes on reset, so a miss in flight across it stores nothing.
	gen uint64

	hits, misses, bypasses *prometheus.CounterVec
	evictions              prometheus.Counter
	bytes                  prometheus.Gauge
}

// cacheEntry is a stored 200 answer. It never changes once built, so a
// waiter can write it while the cache moves or drops it.
type cacheEntry struct {
	key     string
	header  http.Header // the upstream's, without Age and X-Cache
	body    []byte
	stored  time.Time
	age     time.Duration // the upstream's Age when stored
	expires time.Time
	size    int64
}

// flight is one upstream call that concurrent misses for its key wait for:
// stampede protection.
type flight struct {
	done    chan struct{}
	entry   *cacheEntry // set before done closes; nil when the answer cannot be shared
	waiters int         // under responseCache.mu
}

// newResponseCache returns a cache of at most maxBytes (see entrySize)
// reading time from now.
func newResponseCache(maxBytes int64, now func() time.Time) *responseCache {
	return &responseCache{
		now:     now,
		max:     maxBytes,
		entries: map[string]*list.Element{},
		lru:     list.New(),
		flights: map[string]*flight{},
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mercato_gateway_cache_hits_total",
			Help: "Requests answered from the response cache, by route.",
		}, []string{"route"}),
		misses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mercato_gateway_cache_misses_total",
			Help: "Requests of cached routes that called the upstream, by route.",
		}, []string{"route"}),
		bypasses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mercato_gateway_cache_bypasses_total",
			Help: "Requests of cached routes that skipped the cache (client no-cache or no-store, conditional, range, HEAD miss), by route.",
		}, []string{"route"}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mercato_gateway_cache_evictions_total",
			Help: "Entries dropped to keep the response cache within its byte budget.",
		}),
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mercato_gateway_cache_bytes",
			Help: "Bytes held by the response cache: keys, headers and bodies.",
		}),
	}
}

// collectors are the cache's metrics, for a registry.
func (c *responseCache) collectors() []prometheus.Collector {
	return []prometheus.Collector{c.hits, c.misses, c.bypasses, c.evictions, c.bytes}
}

// reset drops every entry and sets the budget, for a new route file:
// misses in flight finish without storing, and metrics carry on.
func (c *responseCache) reset(maxBytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.max = maxBytes
	c.gen++
	clear(c.entries)
	c.lru.Init()
	c.size = 0
	c.bytes.Set(0)
}

// serve answers r from the cache or through next, storing what it may.
// Call it after authentication and rate limiting, around the upstream call
// alone: each caller is checked before it gets a cached answer.
//
// GET is cached; HEAD is answered from a GET entry and otherwise passes
// through; other methods and upgrades pass through untouched.
func (c *responseCache) serve(w http.ResponseWriter, r *http.Request, route string, cfg CacheConfig, next http.Handler) {
	if (r.Method != http.MethodGet && r.Method != http.MethodHead) || r.Header.Get("Upgrade") != "" {
		next.ServeHTTP(w, r)
		return
	}
	if cfg.MaxEntryBytes <= 0 {
		cfg.MaxEntryBytes = defaultMaxEntryBytes
	}
	noCache, noStore := clientDirectives(r.Header)
	if noCache || noStore || conditional(r.Header) {
		// The client asks for a fresh answer. After no-cache that answer
		// refreshes the entry; conditional and range answers are partial.
		c.bypasses.WithLabelValues(route).Inc()
		c.mu.Lock()
		gen := c.gen
		c.mu.Unlock()
		store := noCache && !noStore && !conditional(r.Header) && r.Method == http.MethodGet
		key := cacheKey(r, route, cfg)
		e := c.fetch(w, r, key, cfg, next, "BYPASS", store)
		switch {
		case e != nil:
			c.put(e, gen)
		case store:
			// The fresh answer may not be stored: neither may the old one
			// still be served.
			c.mu.Lock()
			if el, ok := c.entries[key]; ok {
				c.removeLocked(el)
			}
			c.mu.Unlock()
		}
		return
	}
	key := cacheKey(r, route, cfg)
	c.mu.Lock()
	if e := c.getLocked(key); e != nil {
		c.mu.Unlock()
		c.hits.WithLabelValues(route).Inc()
		c.answer(w, r, e)
		return
	}
	if r.Method == http.MethodHead {
		c.mu.Unlock()
		c.bypasses.WithLabelValues(route).Inc()
		c.fetch(w, r, key, cfg, next, "BYPASS", false)
		return
	}
	if f, ok := c.flights[key]; ok {
		f.waiters++
		c.mu.Unlock()
		c.wait(w, r, route, key, cfg, next, f)
		return
	}
	f := &flight{done: make(chan struct{})}
	c.flights[key] = f
	gen := c.gen
	c.mu.Unlock()
	c.misses.WithLabelValues(route).Inc()
	// The waiters are let go as soon as the upstream's answer is whole, not
	// when the leader's client has read it: one client that reads slowly
	// must not hold every other. So the leader's copy of a storable answer
	// is held and written after; an answer that cannot be stored lets them
	// go at once and streams.
	var once sync.Once
	release := func(e *cacheEntry) {
		once.Do(func() {
			c.mu.Lock()
			if e != nil {
				c.putLocked(e, gen)
			}
			delete(c.flights, key)
			f.entry = e
			c.mu.Unlock()
			close(f.done)
		})
	}
	// Deferred so that waiters are let go even when next panics, as the
	// reverse proxy does (http.ErrAbortHandler) when a body breaks off.
	defer release(nil)
	rec := c.newRecorder(w, cfg, "MISS", true)
	rec.hold, rec.onPass = true, func() { release(nil) }
	next.ServeHTTP(rec, r)
	release(c.entryOf(rec, key))
	rec.finish()
}

// wait answers r with the result of the call in flight f. When that answer
// cannot be shared (not storable, or the call failed), r makes its own
// call: the waiters go upstream together rather than queue behind each
// other, since an answer not stored now is unlikely to be storable next.
func (c *responseCache) wait(w http.ResponseWriter, r *http.Request, route, key string, cfg CacheConfig, next http.Handler, f *flight) {
	select {
	case <-f.done:
	case <-r.Context().Done():
		// Answered as the proxy answers a request that ended (upstreamError).
		if errors.Is(r.Context().Err(), context.DeadlineExceeded) {
			web.Error(w, r, http.StatusGatewayTimeout, "the service did not answer in time")
		} else {
			w.WriteHeader(499)
		}
		return
	}
	if f.entry != nil {
		c.hits.WithLabelValues(route).Inc()
		c.answer(w, r, f.entry)
		return
	}
	c.misses.WithLabelValues(route).Inc()
	c.mu.Lock()
	gen := c.gen
	c.mu.Unlock()
	if e := c.fetch(w, r, key, cfg, next, "MISS", true); e != nil {
		c.put(e, gen)
	}
}

// answer writes e. Headers the gateway set before (the correlation id,
// rate limit headers) stay; e's are added as the proxy adds an upstream's.
func (c *responseCache) answer(w http.ResponseWriter, r *http.Request, e *cacheEntry) {
	h := w.Header()
	for k, vv := range e.header {
		h[k] = append(h[k], vv...)
	}
	age := max(e.age+c.now().Sub(e.stored), 0)
	h.Set("Age", strconv.FormatInt(int64(age/time.Second), 10))
	h.Set("X-Cache", "HIT")
	h.Set("Content-Length", strconv.Itoa(len(e.body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(e.body)
	}
}

// fetch answers r through next, streaming to w, and returns the answer as
// an entry when store is set and the answer may be stored.
func (c *responseCache) fetch(w http.ResponseWriter, r *http.Request, key string, cfg CacheConfig, next http.Handler, xcache string, store bool) *cacheEntry {
	rec := c.newRecorder(w, cfg, xcache, store)
	next.ServeHTTP(rec, r)
	return c.entryOf(rec, key)
}

func (c *responseCache) newRecorder(w http.ResponseWriter, cfg CacheConfig, xcache string, store bool) *recorder {
	return &recorder{w: w, header: http.Header{}, xcache: xcache, keep: store, cfg: cfg, now: c.now()}
}

// entryOf is the entry rec's answer makes, or nil when it may not be stored.
func (c *responseCache) entryOf(rec *recorder, key string) *cacheEntry {
	if !rec.wrote {
		rec.WriteHeader(http.StatusOK)
	}
	if !rec.keep {
		return nil
	}
	if cl := rec.header.Get("Content-Length"); cl != "" && cl != strconv.Itoa(rec.body.Len()) {
		return nil
	}
	header := rec.header.Clone()
	header.Del("Age")
	header.Del("X-Cache")
	// Freshness counts from when the request left, as RFC 9111 ages do.
	e := &cacheEntry{key: key, header: header, body: bytes.Clone(rec.body.Bytes()), stored: rec.now, age: rec.age, expires: rec.now.Add(rec.ttl)}
	if !c.now().Before(e.expires) {
		return nil // the upstream took longer than the answer stays fresh
	}
	e.size = entrySize(e)
	return e
}

// entrySize is what an entry counts against the cache's budget: its key,
// its body, and the names and values of its headers.
func entrySize(e *cacheEntry) int64 {
	n := len(e.key) + len(e.body)
	for k, vv := range e.header {
		for _, v := range vv {
			n += len(k) + len(v)
		}
	}
	return int64(n)
}

func (c *responseCache) getLocked(key string) *cacheEntry {
	el, ok := c.entries[key]
	if !ok {
		return nil
	}
	e := el.Value.(*cacheEntry)
	if !c.now().Before(e.expires) {
		c.removeLocked(el)
		c.bytes.Set(float64(c.size))
		return nil
	}
	c.lru.MoveToFront(el)
	return e
}

func (c *responseCache) put(e *cacheEntry, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(e, gen)
}

func (c *responseCache) putLocked(e *cacheEntry, gen uint64) {
	if gen != c.gen || e.size > c.max {
		return
	}
	if old, ok := c.entries[e.key]; ok {
		c.removeLocked(old)
	}
	c.entries[e.key] = c.lru.PushFront(e)
	c.size += e.size
	for c.size > c.max {
		c.removeLocked(c.lru.Back())
		c.evictions.Inc()
	}
	c.bytes.Set(float64(c.size))
}

func (c *responseCache) removeLocked(el *list.Element) {
	e := c.lru.Remove(el).(*cacheEntry)
	delete(c.entries, e.key)
	c.size -= e.size
}

// identityHeaders are set by the gateway from a verified token (and
// removed from clients' requests), so they are always part of the key: a
// route with auth: jwt never serves one caller's answer to another, even
// when its vary leaves Authorization out.
var identityHeaders = [...]string{web.SubjectHeader, web.RolesHeader}

// cacheKey is route, method, path, query with its parameters sorted, and a
// SHA-256 of the varying headers' values: no bearer token is kept in
// memory as a key. HEAD shares GET's key.
func cacheKey(r *http.Request, route string, cfg CacheConfig) string {
	h := sha256.New()
	var buf []byte
	field := func(name string) {
		vv := r.Header.Values(name)
		buf = append(buf[:0], name...)
		buf = append(buf, 0)
		buf = strconv.AppendInt(buf, int64(len(vv)), 10)
		for _, v := range vv {
			buf = append(buf, 0)
			buf = strconv.AppendInt(buf, int64(len(v)), 10)
			buf = append(buf, ':')
			buf = append(buf, v...)
		}
		buf = append(buf, '\n')
		h.Write(buf)
	}
	for _, name := range cfg.Vary {
		field(name)
	}
	for _, name := range identityHeaders {
		field(name)
	}
	return route + "\x00GET\x00" + r.URL.EscapedPath() + "?" + sortedQuery(r.URL.RawQuery) + "\x00" + hex.EncodeToString(h.Sum(nil))
}

// sortedQuery orders the parameters of a raw query by name, keeping the
// order of a repeated name's values, which an upstream may care about.
func sortedQuery(raw string) string {
	if raw == "" {
		return ""
	}
	params := strings.Split(raw, "&")
	slices.SortStableFunc(params, func(a, b string) int {
		ka, _, _ := strings.Cut(a, "=")
		kb, _, _ := strings.Cut(b, "=")
		return strings.Compare(ka, kb)
	})
	return strings.Join(params, "&")
}

// clientDirectives reads a request's no-cache and no-store (Pragma:
// no-cache counts when there is no Cache-Control).
func clientDirectives(h http.Header) (noCache, noStore bool) {
	cc := h.Values("Cache-Control")
	if len(cc) == 0 {
		return slices.ContainsFunc(h.Values("Pragma"), func(v string) bool {
			return strings.EqualFold(strings.TrimSpace(v), "no-cache")
		}), false
	}
	for _, d := range directives(cc) {
		switch d[0] {
		case "no-cache":
			noCache = true
		case "no-store":
			noStore = true
		}
	}
	return noCache, noStore
}

// conditional reports a request that asks for less than the whole answer.
func conditional(h http.Header) bool {
	for _, k := range []string{"If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since", "If-Range", "Range"} {
		if _, ok := h[k]; ok {
			return true
		}
	}
	return false
}

// directives splits Cache-Control values into lower-cased names and
// unquoted values. A comma inside a quoted value splits it too, which only
// ever reads more into a header, not less: `private="a, b"` stays private.
func directives(values []string) [][2]string {
	var out [][2]string
	for _, v := range values {
		for d := range strings.SplitSeq(v, ",") {
			name, val, _ := strings.Cut(strings.TrimSpace(d), "=")
			if name == "" {
				continue
			}
			out = append(out, [2]string{strings.ToLower(name), strings.Trim(val, `"`)})
		}
	}
	return out
}

// freshness says how long a 200 answer with header h may be served from
// the cache of a route with cfg, and the age it already has; ok is false
// when it may not be stored.
//
// private is stored only when the route varies on Authorization: the key
// then holds the caller's credential, so the entry is served to that
// caller alone, which is what a private cache does.
func freshness(h http.Header, cfg CacheConfig, now time.Time) (ttl, age time.Duration, ok bool) {
	if len(h.Values("Set-Cookie")) > 0 || len(h.Values("Trailer")) > 0 {
		return 0, 0, false
	}
	for _, v := range h.Values("Vary") {
		for name := range strings.SplitSeq(v, ",") {
			// An answer that varies on what the key leaves out would be
			// served to requests it was not made for.
			if name = http.CanonicalHeaderKey(strings.TrimSpace(name)); name != "" && !slices.Contains(cfg.Vary, name) && !slices.Contains(identityHeaders[:], name) {
				return 0, 0, false
			}
		}
	}
	maxAge, sMaxAge := time.Duration(-1), time.Duration(-1)
	for _, d := range directives(h.Values("Cache-Control")) {
		switch d[0] {
		case "no-store", "no-cache":
			return 0, 0, false
		case "private":
			if !slices.Contains(cfg.Vary, "Authorization") {
				return 0, 0, false
			}
		case "max-age", "s-maxage":
			s, valid := deltaSeconds(d[1])
			if !valid {
				return 0, 0, false // an invalid lifetime reads as stale
			}
			p := &maxAge
			if d[0] == "s-maxage" {
				p = &sMaxAge
			}
			if *p < 0 || s < *p {
				*p = s
			}
		}
	}
	ttl = cfg.TTL
	switch {
	case sMaxAge >= 0: // a shared cache's own lifetime wins over max-age
		ttl = min(ttl, sMaxAge)
	case maxAge >= 0:
		ttl = min(ttl, maxAge)
	case len(h.Values("Expires")) > 0:
		exp, err := http.ParseTime(h.Get("Expires"))
		if err != nil {
			return 0, 0, false // "Expires: 0" and the like mean already expired
		}
		date := now
		if d, err := http.ParseTime(h.Get("Date")); err == nil {
			date = d
		}
		ttl = min(ttl, exp.Sub(date))
	}
	if s, valid := deltaSeconds(h.Get("Age")); valid {
		age = s
	}
	ttl -= age
	return ttl, age, ttl > 0
}

// deltaSeconds reads an RFC 9111 delta-seconds; too large a number is
// capped, as the RFC asks.
func deltaSeconds(s string) (time.Duration, bool) {
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > 1<<31 {
		n = 1 << 31
	}
	return time.Duration(n) * time.Second, true
}

// recorder passes an answer to the client as it comes and keeps a copy
// while it may still be stored: up to MaxEntryBytes, then it lets go of
// the copy and only passes the rest through.
type recorder struct {
	w      http.ResponseWriter
	header http.Header // the handler's, until the answer starts; then w's
	xcache string
	cfg    CacheConfig
	now    time.Time

	wrote    bool
	keep     bool // the answer may still be stored
	body     bytes.Buffer
	ttl, age time.Duration

	// hold keeps the client's copy of a storable answer until finish, so
	// that the waiters need not wait for the client; passed is set once
	// the answer turned out not storable and goes to the client as it
	// comes, and onPass is called then.
	hold, passed bool
	onPass       func()
	code         int
}

func (rec *recorder) Header() http.Header {
	if rec.wrote {
		// Trailers are set after the body.
		return rec.w.Header()
	}
	return rec.header
}

func (rec *recorder) WriteHeader(code int) {
	if rec.wrote {
		return
	}
	h := rec.w.Header()
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		// Informational (103 Early Hints) goes through with its own headers,
		// which are not the final answer's.
		saved := h.Clone()
		for k, vv := range rec.header {
			h[k] = append(h[k], vv...)
		}
		rec.w.WriteHeader(code)
		clear(h)
		for k, vv := range saved {
			h[k] = vv
		}
		return
	}
	rec.wrote, rec.code = true, code
	if rec.keep {
		var ok bool
		rec.ttl, rec.age, ok = freshness(rec.header, rec.cfg, rec.now)
		// An event stream is never whole: it passes as it comes.
		rec.keep = ok && code == http.StatusOK && !strings.HasPrefix(rec.header.Get("Content-Type"), "text/event-stream")
		if n, err := strconv.ParseInt(rec.header.Get("Content-Length"), 10, 64); err == nil && n > rec.cfg.MaxEntryBytes {
			rec.keep = false
		}
	}
	if rec.hold && rec.keep {
		return // written by finish, or by pass if it turns out too large
	}
	rec.pass()
}

// pass starts the answer to the client: its headers, and what was held.
func (rec *recorder) pass() {
	if rec.passed {
		return
	}
	rec.passed = true
	h := rec.w.Header()
	for k, vv := range rec.header {
		h[k] = append(h[k], vv...)
	}
	h.Set("X-Cache", rec.xcache)
	rec.w.WriteHeader(rec.code)
	if rec.hold {
		if rec.body.Len() > 0 && !rec.keep {
			_, _ = rec.w.Write(rec.body.Bytes())
			rec.body = bytes.Buffer{}
		}
		if rec.onPass != nil {
			rec.onPass()
		}
	}
}

// finish writes a held answer to the client.
func (rec *recorder) finish() {
	if !rec.hold || rec.passed {
		return
	}
	rec.keep = false // what is held goes out now
	rec.pass()
}

func (rec *recorder) Write(p []byte) (int, error) {
	if !rec.wrote {
		rec.WriteHeader(http.StatusOK)
	}
	if rec.keep {
		if int64(rec.body.Len()+len(p)) > rec.cfg.MaxEntryBytes {
			rec.keep = false
			if rec.hold {
				rec.pass() // what was held goes first
			}
			rec.body = bytes.Buffer{}
		} else {
			rec.body.Write(p)
			if rec.hold && !rec.passed {
				return len(p), nil
			}
		}
	}
	n, err := rec.w.Write(p)
	if err != nil {
		rec.keep = false
	}
	return n, err
}

// FlushError lets the proxy stream (server-sent events) through the
// recorder; http.ResponseController finds it.
func (rec *recorder) FlushError() error {
	if !rec.wrote {
		rec.WriteHeader(http.StatusOK)
	}
	if rec.hold && !rec.passed {
		return nil // nothing went to the client yet
	}
	return http.NewResponseController(rec.w).Flush()
}

// Flush implements http.Flusher.
func (rec *recorder) Flush() { _ = rec.FlushError() }

// Unwrap gives http.ResponseController the client's writer, for deadlines.
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.w }

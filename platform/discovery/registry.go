package discovery

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
)

// Config configures a [Registry]. Every registry on a bucket should use the
// same TTL: the last one opened sets the bucket's.
type Config struct {
	Bucket string        // default DefaultBucket
	TTL    time.Duration // default 15s, at least 1s: an instance that stops heartbeating disappears after this
	Logger *slog.Logger  // default discards
}

// DefaultBucket is the key-value bucket instances register in.
const DefaultBucket = "mercato_services"

// Forget deletes every registration in bucket: for a process that runs the
// broker itself and knows, on start, that every instance it finds there is
// from an earlier, dead run of it.
func Forget(ctx context.Context, js jetstream.JetStream, bucket string) error {
	err := js.DeleteKeyValue(ctx, bucket)
	if err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
		return fmt.Errorf("discovery: forget bucket %s: %w", bucket, err)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Bucket == "" {
		c.Bucket = DefaultBucket
	}
	if c.TTL == 0 {
		c.TTL = 15 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Registry is a registry of live instances on a JetStream key-value bucket,
// keyed "<service>.<id>". It keeps a local view updated by a KV watcher (no
// polling), so lookups are in memory.
//
// Expiry: the bucket's TTL removes a value that was not refreshed in time.
// Servers with limit markers (nats-server 2.11+) tell the watcher; on older
// servers the removal is silent, so lookups also drop any instance whose
// Heartbeat is older than the TTL. The same rule hides instances left in a
// persisted store by a run that crashed. It assumes clocks agree to well
// within the TTL.
type Registry struct {
	kv      jetstream.KeyValue
	watcher jetstream.KeyWatcher
	ttl     time.Duration
	logger  *slog.Logger

	mu        sync.Mutex
	instances map[string]Instance // by key; written by the watch loop, pruned by lookups
	next      map[string]uint64   // round-robin position per service
	closed    bool

	closing chan struct{}  // closed by Close: ends the refresh loops
	wg      sync.WaitGroup // the watch loop and the refresh loops
}

// NewRegistry creates or updates the bucket, starts the watcher and returns
// once the local view holds the bucket's current values. ctx bounds that
// wait; the watcher runs until Close.
func NewRegistry(ctx context.Context, js jetstream.JetStream, cfg Config) (*Registry, error) {
	cfg = cfg.withDefaults()
	if cfg.TTL < time.Second {
		return nil, fmt.Errorf("discovery: TTL %s is below the 1s minimum", cfg.TTL)
	}
	kv, err := openBucket(ctx, js, cfg)
	if err != nil {
		return nil, err
	}
	// The watch lives as long as the registry (until Close), not as long as
	// ctx, which bounds only this call: a start-up deadline ending must not
	// freeze every client's view.
	w, err := kv.WatchAll(context.WithoutCancel(ctx))
	if err != nil {
		return nil, fmt.Errorf("discovery: watch bucket %s: %w", cfg.Bucket, err)
	}
	r := &Registry{
		kv:        kv,
		watcher:   w,
		ttl:       cfg.TTL,
		logger:    cfg.Logger,
		instances: make(map[string]Instance),
		next:      make(map[string]uint64),
		closing:   make(chan struct{}),
	}
	initial := make(chan struct{})
	stopped := make(chan struct{})
	r.wg.Go(func() {
		defer close(stopped)
		r.watch(initial)
	})
	select {
	case <-initial:
		return r, nil
	case <-stopped:
		r.Close()
		return nil, fmt.Errorf("discovery: watcher of bucket %s stopped before its initial values", cfg.Bucket)
	case <-ctx.Done():
		r.Close()
		return nil, fmt.Errorf("discovery: wait for initial values of bucket %s: %w", cfg.Bucket, ctx.Err())
	}
}

func openBucket(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.KeyValue, error) {
	kvc := jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "live service instances, see platform/discovery",
		TTL:         cfg.TTL,
		// The server leaves a marker when a key expires, so watchers see the
		// expiry as a purge; how long the marker stays does not matter to us.
		LimitMarkerTTL: cfg.TTL,
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, kvc)
	if errors.Is(err, jetstream.ErrLimitMarkerTTLNotSupported) {
		cfg.Logger.InfoContext(ctx, "discovery: server has no limit markers, expiry relies on heartbeat age", "bucket", cfg.Bucket)
		kvc.LimitMarkerTTL = 0
		kv, err = js.CreateOrUpdateKeyValue(ctx, kvc)
	}
	if err != nil {
		return nil, fmt.Errorf("discovery: open bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// watch applies the watcher's entries to the local view until the watcher's
// channel closes: after Stop (Close) or when the connection closes.
func (r *Registry) watch(initial chan<- struct{}) {
	started := false
	for e := range r.watcher.Updates() {
		if e == nil { // the watcher has delivered every current value
			if !started {
				started = true
				close(initial)
			}
			continue
		}
		r.apply(e)
	}
	select {
	case <-r.closing:
	default:
		r.logger.Warn("discovery: watcher stopped, the local view is no longer updated", "bucket", r.kv.Bucket())
	}
}

func (r *Registry) apply(e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut { // delete, purge, or the server's expiry marker
		r.forget(e.Key())
		return
	}
	var inst Instance
	if err := json.Unmarshal(e.Value(), &inst); err != nil {
		r.logger.Warn("discovery: ignore malformed instance", "bucket", e.Bucket(), "key", e.Key(), "err", err)
		r.forget(e.Key())
		return
	}
	r.mu.Lock()
	r.instances[e.Key()] = inst
	r.mu.Unlock()
}

func (r *Registry) forget(key string) {
	r.mu.Lock()
	delete(r.instances, key)
	r.mu.Unlock()
}

// Close stops the watcher and the refresh of every registration made through
// r. It deletes no key: call the deregister functions for that.
func (r *Registry) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	close(r.closing)
	r.mu.Unlock()
	// Stop fails only when the connection is closed or draining, which ends
	// the subscription, and so the watch loop, on its own.
	_ = r.watcher.Stop()
	r.wg.Wait()
}

// Register puts inst under "<service>.<id>" and refreshes it every TTL/3 until
// deregister is called (which deletes the key), ctx ends or r is closed; in
// the last two cases the key expires after the TTL, as after a crash. An
// empty ID gets a UUIDv7, a zero Started the current time. Service and ID may
// hold letters, digits, '-', '_' and '='.
func (r *Registry) Register(ctx context.Context, inst Instance) (deregister func(context.Context) error, err error) {
	if inst.ID == "" {
		id, err := uuid.NewV7()
		if err != nil {
			return nil, fmt.Errorf("discovery: instance id: %w", err)
		}
		inst.ID = id.String()
	}
	if !validToken(inst.Service) || !validToken(inst.ID) {
		return nil, fmt.Errorf("discovery: invalid service %q or id %q", inst.Service, inst.ID)
	}
	if inst.Addr == "" {
		return nil, fmt.Errorf("discovery: instance %s of %s has no address", inst.ID, inst.Service)
	}
	if inst.Started.IsZero() {
		inst.Started = time.Now()
	}
	inst.Meta = maps.Clone(inst.Meta) // the refresh loop must not share the caller's map
	key := inst.Service + "." + inst.ID
	if err := r.put(ctx, key, inst); err != nil {
		return nil, err
	}

	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		cancel()
		return nil, errors.New("discovery: registry closed")
	}
	r.wg.Go(func() {
		defer close(done)
		r.refresh(ctx, key, inst)
	})
	r.mu.Unlock()

	return func(ctx context.Context) error {
		cancel()
		<-done
		if err := r.kv.Delete(ctx, key); err != nil {
			return fmt.Errorf("discovery: deregister %s: %w", key, err)
		}
		return nil
	}, nil
}

func (r *Registry) refresh(ctx context.Context, key string, inst Instance) {
	interval := r.ttl / 3
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.closing:
			return
		case <-t.C:
			// A heartbeat that takes longer than the interval is already late.
			putCtx, cancel := context.WithTimeout(ctx, interval)
			err := r.put(putCtx, key, inst)
			cancel()
			if err != nil && ctx.Err() == nil {
				r.logger.WarnContext(ctx, "discovery: heartbeat failed", "key", key, "err", err)
			}
		}
	}
}

func (r *Registry) put(ctx context.Context, key string, inst Instance) error {
	inst.Heartbeat = time.Now()
	b, err := json.Marshal(inst)
	if err != nil {
		return fmt.Errorf("discovery: encode %s: %w", key, err)
	}
	if _, err := r.kv.Put(ctx, key, b); err != nil {
		return fmt.Errorf("discovery: put %s: %w", key, err)
	}
	return nil
}

// Instances returns the live instances of service, sorted by ID.
func (r *Registry) Instances(service string) []Instance {
	return r.live(func(inst Instance) bool { return inst.Service == service })[service]
}

// Services returns every live instance, grouped by service name, each group
// sorted by ID.
func (r *Registry) Services() map[string][]Instance {
	return r.live(func(Instance) bool { return true })
}

// live returns the live instances that keep accepts, grouped by service and
// sorted by ID. It drops from the view those whose heartbeat is too old.
func (r *Registry) live(keep func(Instance) bool) map[string][]Instance {
	now := time.Now()
	out := make(map[string][]Instance)
	r.mu.Lock()
	for key, inst := range r.instances {
		if now.Sub(inst.Heartbeat) > r.ttl {
			delete(r.instances, key) // expired without the watcher being told
			continue
		}
		if keep(inst) {
			out[inst.Service] = append(out[inst.Service], inst.clone())
		}
	}
	r.mu.Unlock()
	for _, list := range out {
		slices.SortFunc(list, func(a, b Instance) int { return cmp.Compare(a.ID, b.ID) })
	}
	return out
}

// Resolve picks one live instance of service, round robin. It fails with
// ErrNoInstance, wrapped with the service name, when there is none.
func (r *Registry) Resolve(ctx context.Context, service string) (Instance, error) {
	if err := ctx.Err(); err != nil {
		return Instance{}, fmt.Errorf("discovery: resolve %s: %w", service, err)
	}
	list := r.Instances(service)
	if len(list) == 0 {
		return Instance{}, fmt.Errorf("%w of %q", ErrNoInstance, service)
	}
	r.mu.Lock()
	n := r.next[service]
	r.next[service] = n + 1
	r.mu.Unlock()
	return list[n%uint64(len(list))], nil
}

// validToken reports whether s can be one token of a key: non-empty, without
// the '.' that separates service from id.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '=':
		default:
			return false
		}
	}
	return true
}

// Package discovery finds the network address of a service instance.
//
// Client-side discovery: each process registers its listeners in a [Registry],
// a JetStream key-value bucket keyed "<service>.<id>", and refreshes them with
// heartbeats; clients keep a local view of the bucket, updated by a watcher,
// and pick an instance round robin ([Registry.Resolve], or [Transport] for
// HTTP and RPC clients). An instance that stops heartbeating disappears after
// the bucket's TTL, so a crashed process is not resolved for long.
//
// Server-side discovery: where a platform already balances (a Kubernetes
// Service, a fixed address in config), [Static] resolves from a table.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"time"
)

// ErrNoInstance is returned, wrapped with the service name, when a service has
// no live instance.
var ErrNoInstance = errors.New("discovery: no live instance")

// Instance is one running copy of a service, reachable at Addr.
type Instance struct {
	Service   string            `json:"service"`
	ID        string            `json:"id"`   // unique per process instance (UUIDv7 by default)
	Addr      string            `json:"addr"` // host:port of its listener
	Version   string            `json:"version,omitempty"`
	Meta      map[string]string `json:"meta,omitempty"`
	Started   time.Time         `json:"started"`
	Heartbeat time.Time         `json:"heartbeat"`
}

// clone returns a copy that shares no map with inst, so callers may modify it.
func (inst Instance) clone() Instance {
	inst.Meta = maps.Clone(inst.Meta)
	return inst
}

type versionKey struct{}

// WithVersion asks resolvers for an instance of that version of the
// service only (Instance.Version): how a canary or blue-green split sends a
// call to the version it chose.
func WithVersion(ctx context.Context, version string) context.Context {
	return context.WithValue(ctx, versionKey{}, version)
}

// VersionOf is the version WithVersion asked for, or "" for any.
func VersionOf(ctx context.Context) string {
	v, _ := ctx.Value(versionKey{}).(string)
	return v
}

// Resolver picks an instance of a service; it is what clients need.
type Resolver interface {
	Resolve(ctx context.Context, service string) (Instance, error)
}

// Static resolves from a fixed table service -> addresses, round robin. It
// suits server-side discovery, where an address is already a load balancer
// (a Kubernetes Service name, a configured host). An address is also the
// instance's ID. The table is copied.
func Static(table map[string][]string) Table {
	s := staticResolver{services: make(map[string]*staticService, len(table))}
	for service, addrs := range table {
		if len(addrs) > 0 {
			s.services[service] = &staticService{addrs: slices.Clone(addrs)}
		}
	}
	return s
}

// Table resolves from a fixed table and lists it (see Static).
type Table interface {
	Resolver
	Lister
}

type staticResolver struct {
	services map[string]*staticService // read-only after Static returns
}

type staticService struct {
	addrs []string
	next  atomic.Uint64
}

func (s staticResolver) Resolve(ctx context.Context, service string) (Instance, error) {
	if err := ctx.Err(); err != nil {
		return Instance{}, fmt.Errorf("discovery: resolve %s: %w", service, err)
	}
	svc, ok := s.services[service]
	if !ok {
		return Instance{}, fmt.Errorf("%w of %q", ErrNoInstance, service)
	}
	if v := VersionOf(ctx); v != "" {
		// A static table knows no versions: name each its own service.
		return Instance{}, fmt.Errorf("%w of %q version %q", ErrNoInstance, service, v)
	}
	addr := svc.addrs[(svc.next.Add(1)-1)%uint64(len(svc.addrs))]
	return Instance{Service: service, ID: addr, Addr: addr}, nil
}

// Instances lists the addresses of service, as instances; with it a static
// table can also feed a Balancer.
func (s staticResolver) Instances(service string) []Instance {
	svc, ok := s.services[service]
	if !ok {
		return nil
	}
	out := make([]Instance, len(svc.addrs))
	for i, addr := range svc.addrs {
		out[i] = Instance{Service: service, ID: addr, Addr: addr}
	}
	return out
}

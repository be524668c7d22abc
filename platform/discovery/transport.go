package discovery

import (
	"fmt"
	"net/http"
	"strings"
)

// Transport is an http.RoundTripper for client-side discovery: a request to
// http://<service>/path is sent to the address of an instance that res picks.
// A Balancer as res also hears how each call went: an error or a 5xx
// answer counts against the instance.
// The request is cloned, not mutated, and its Host header becomes the
// instance address unless the caller set one of its own. Hosts that contain
// a dot or a port (an address or a DNS name) are passed through unchanged.
// base nil means http.DefaultTransport.
func Transport(res Resolver, base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return transport{res: res, base: base}
}

type transport struct {
	res  Resolver
	base http.RoundTripper
}

func (t transport) RoundTrip(req *http.Request) (*http.Response, error) {
	service := req.URL.Host
	if strings.ContainsAny(service, ".:") {
		return t.base.RoundTrip(req)
	}
	inst, err := t.res.Resolve(req.Context(), service)
	if err != nil {
		// A RoundTripper must close the body, even on error.
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, fmt.Errorf("resolve %s: %w", service, err)
	}
	// A shallow copy with its own URL: nothing below changes the headers in
	// place (a RoundTripper may not), so they need no copy per call.
	out := new(http.Request)
	*out = *req
	u := *req.URL
	out.URL = &u
	out.URL.Host = inst.Addr
	if out.Host == service {
		out.Host = "" // send the instance address, not the service name
	}
	resp, err := t.base.RoundTrip(out)
	if d, ok := t.res.(doner); ok {
		outcome := err
		if err == nil && resp.StatusCode >= 500 {
			outcome = fmt.Errorf("%s answered %s", inst.Addr, resp.Status)
		}
		d.Done(inst, outcome)
	}
	return resp, err
}

// doner learns how each call to an instance it picked went (Balancer).
type doner interface {
	Done(inst Instance, err error)
}

package web

import (
	"net/http"
	"time"
)

// idlePerHost is how many idle connections a transport keeps to each host.
// http.DefaultTransport keeps 2: with more calls than that in flight to one
// service, every extra connection is closed when its call ends and dialled
// again for the next, and under load the dials and closes cost more than
// the calls.
const idlePerHost = 64

// NewTransport returns a transport for calls between services and to the
// outside world: http.DefaultTransport's dialer, proxy and timeouts, with a
// pool sized for concurrent calls to a few hosts. Share one per process part
// (node, gateway): connections are pooled per transport.
func NewTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 4 * idlePerHost
	t.MaxIdleConnsPerHost = idlePerHost
	t.IdleConnTimeout = 90 * time.Second
	return t
}

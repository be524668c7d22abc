package gateway

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// An upstream whose answer breaks off after its head: the client must see
// the answer broken, not a shorter one that looks whole, and the cache
// must keep nothing. (httputil.ReverseProxy aborts the answer only under a
// server it recognises; the gateway's own server is one.)
func TestGateway_ABodyThatBreaksOffReachesTheClientBroken(t *testing.T) {
	var calls atomic.Int32
	up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		// No length: net/http chunks it, so only the end chunk tells the
		// client that it is whole.
		_, _ = io.WriteString(w, `{"items":[`+strings.Repeat(`"x",`, 2000))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the upstream dies mid-answer
	})
	upAddr, _ := startServer(t, up) // any server that breaks a connection will do
	routes := jwtLines + `routes:
  - path: /api/products
    methods: [GET]
    service: inventory
    auth: none
    cache: 1m
`
	gw, client := startServer(t, gatewayHandler(t, routes, map[string][]string{"inventory": {strings.TrimPrefix(upAddr, "http://")}}, nil, nil))

	for i := range 2 {
		resp, err := client.Get(gw + "/api/products")
		if err != nil {
			continue // broken before the head: also not whole
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Fatalf("request %d: a whole-looking %d answer of %d bytes from an upstream that broke off", i+1, resp.StatusCode, len(body))
		}
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("the upstream was called %d times for 2 requests: a broken answer was cached", n)
	}
}

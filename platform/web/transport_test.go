package web_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mercato-shop/mercato/platform/web"
)

// A burst of concurrent calls to one host leaves its connections pooled for
// the next burst, instead of closing all but two of them.
func TestNewTransport_KeepsConnectionsOfAConcurrentBurst(t *testing.T) {
	const calls = 16
	var opened atomic.Int64
	var arrived sync.WaitGroup
	release := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Done()
		<-release
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			opened.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	client := &http.Client{Transport: web.NewTransport()}
	burst := func() {
		t.Helper()
		arrived.Add(calls)
		release = make(chan struct{})
		var done sync.WaitGroup
		for range calls {
			done.Go(func() {
				resp, err := client.Get(srv.URL)
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
			})
		}
		arrived.Wait() // all in flight at once, each on a connection of its own
		close(release)
		done.Wait()
	}
	burst()
	first := opened.Load()
	burst()
	if again := opened.Load() - first; again != 0 {
		t.Fatalf("the second burst opened %d new connections (the first opened %d); want all reused", again, first)
	}
}

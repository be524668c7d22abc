package h1_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mercato-shop/mercato/gateway/h1"
)

// upstream is a net/http server that counts the connections it opened and
// reports each one it saw closed.
type upstream struct {
	*httptest.Server
	opened atomic.Int32
	closed chan struct{}
}

func newUpstream(t *testing.T, h http.Handler, configure ...func(*http.Server)) *upstream {
	t.Helper()
	u := &upstream{closed: make(chan struct{}, 256)}
	u.Server = httptest.NewUnstartedServer(h)
	u.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			u.opened.Add(1)
		case http.StateClosed, http.StateHijacked:
			select {
			case u.closed <- struct{}{}:
			default:
			}
		}
	}
	for _, f := range configure {
		f(u.Config)
	}
	u.Start()
	t.Cleanup(u.Close)
	return u
}

// waitClosed waits until the upstream has seen one more connection close.
func (u *upstream) waitClosed(t *testing.T) {
	t.Helper()
	select {
	case <-u.closed:
	case <-time.After(guard):
		t.Fatal("the upstream saw no connection close")
	}
}

func (u *upstream) host() string { return strings.TrimPrefix(u.URL, "http://") }

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// newTransport returns a transport whose fallback fails the test: what it
// is handed here it must carry itself.
func newTransport(t *testing.T) *h1.Transport {
	t.Helper()
	tr := h1.New(roundTripFunc(func(r *http.Request) (*http.Response, error) {
		t.Errorf("unexpected fallback for %s %s", r.Method, r.URL)
		return nil, errors.New("no fallback here")
	}))
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

func newRequest(t *testing.T, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// roundTrip sends req and reads its answer to the end.
func roundTrip(t *testing.T, tr http.RoundTripper, req *http.Request) (*http.Response, string) {
	t.Helper()
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL, err)
	}
	return res, string(b)
}

func TestTransport_ReusesConnectionOnceBodyIsRead(t *testing.T) {
	long := strings.Repeat("z", 100<<10)
	u := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/short":
			_, _ = io.WriteString(w, "short")
		case "/chunked":
			_, _ = io.WriteString(w, long) // net/http chunks it
		case "/length":
			w.Header().Set("Content-Length", strconv.Itoa(len(long)))
			_, _ = io.WriteString(w, long)
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	tr := newTransport(t)

	tests := []struct {
		method, path string
		want         string
	}{
		{http.MethodGet, "/short", "short"},
		{http.MethodGet, "/chunked", long},
		{http.MethodGet, "/length", long},
		{http.MethodHead, "/short", ""}, // no body to read: pooled at once
		{http.MethodGet, "/empty", ""},
		{http.MethodPost, "/short", "short"},
		{http.MethodGet, "/short", "short"},
	}
	for _, tt := range tests {
		res, got := roundTrip(t, tr, newRequest(t, tt.method, u.URL+tt.path, nil))
		if res.StatusCode >= 300 || got != tt.want {
			t.Errorf("%s %s: %d, %d bytes; want %d bytes", tt.method, tt.path, res.StatusCode, len(got), len(tt.want))
		}
	}
	if n := u.opened.Load(); n != 1 {
		t.Errorf("upstream accepted %d connections for %d sequential requests, want 1", n, len(tests))
	}
}

func TestTransport_ClosesConnectionWhenBodyClosedEarly(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Repeat("z", 100<<10))
	}))
	tr := newTransport(t)

	res, err := tr.RoundTrip(newRequest(t, http.MethodGet, u.URL, nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(res.Body, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close() // what is left could be anything: not reusable
	u.waitClosed(t)

	roundTrip(t, tr, newRequest(t, http.MethodGet, u.URL, nil))
	if n := u.opened.Load(); n != 2 {
		t.Errorf("upstream accepted %d connections, want 2", n)
	}
}

// keeper is a raw upstream that answers every request and never closes a
// connection itself: whether one is reused is the transport's choice alone.
type keeper struct {
	addr     string
	accepted atomic.Int32
}

func newKeeper(t *testing.T) *keeper {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	k := &keeper{addr: ln.Addr().String()}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			k.accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					body := fmt.Sprintf("close=%v", req.Close)
					head := "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n"
					if req.URL.Path == "/server-closes" {
						head += "Connection: close\r\n"
					}
					junk := ""
					if req.URL.Path == "/overlong" {
						// Bytes past the declared length: a broken upstream.
						junk = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nJUNK"
					}
					_, _ = io.WriteString(c, head+"\r\n"+body+junk)
				}
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return k
}

func TestTransport_DoesNotPoolClosingConnections(t *testing.T) {
	tests := []struct {
		name      string
		path      string
		reqClose  bool
		want      string
		wantConns int32
	}{
		{"neither says close", "/", false, "close=false", 1},
		{"request says close", "/", true, "close=true", 2},
		{"answer says close", "/server-closes", false, "close=false", 2},
		// Left in the pool, the connection would hand the stray bytes to
		// the next request as its answer.
		{"answer overruns its length", "/overlong", false, "close=false", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := newKeeper(t)
			tr := newTransport(t)
			for range 2 {
				req := newRequest(t, http.MethodGet, "http://"+k.addr+tt.path, nil)
				req.Close = tt.reqClose
				if _, got := roundTrip(t, tr, req); got != tt.want {
					t.Errorf("upstream saw %q, want %q", got, tt.want)
				}
			}
			if n := k.accepted.Load(); n != tt.wantConns {
				t.Errorf("upstream accepted %d connections for 2 requests, want %d", n, tt.wantConns)
			}
		})
	}
}

func TestTransport_ResendsOnFreshConnectionWhenPooledOneWasClosed(t *testing.T) {
	// httptest's CloseClientConnections closes the pooled connection at the
	// server's end, as an upstream restarting or timing it out does.
	tests := []struct {
		name   string
		method string
		header string
		why    string
	}{
		{"GET", http.MethodGet, "", "replayable: sent, found closed, sent again"},
		{"HEAD", http.MethodHead, "", "replayable"},
		{"OPTIONS", http.MethodOptions, "", "replayable"},
		{"POST with Idempotency-Key", http.MethodPost, "Idempotency-Key", "replayable"},
		{"DELETE with X-Idempotency-Key", http.MethodDelete, "X-Idempotency-Key", "replayable"},
		{"POST", http.MethodPost, "", "not replayable: the probe finds the connection closed"},
		{"PUT", http.MethodPut, "", "not replayable: probed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var handled atomic.Int32
			u := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				handled.Add(1)
				_, _ = io.WriteString(w, "ok")
			}))
			tr := newTransport(t)
			roundTrip(t, tr, newRequest(t, http.MethodGet, u.URL, nil))
			u.CloseClientConnections()
			u.waitClosed(t)

			req := newRequest(t, tt.method, u.URL, nil)
			if tt.header != "" {
				req.Header.Set(tt.header, "k-1")
			}
			res, _ := roundTrip(t, tr, req)
			if res.StatusCode != http.StatusOK {
				t.Errorf("status = %d (%s)", res.StatusCode, tt.why)
			}
			if n := u.opened.Load(); n != 2 {
				t.Errorf("upstream accepted %d connections, want 2", n)
			}
			if n := handled.Load(); n != 2 {
				t.Errorf("upstream handled %d requests, want 2", n)
			}
		})
	}
}

func TestTransport_ProbesPooledConnectionBeforeNonReplayableRequest(t *testing.T) {
	// A net/http upstream closing idle connections by itself: without the
	// probe, the POST would go out on the closed connection and fail, as
	// it may not be sent twice.
	tests := []struct {
		name, method, body string
		key                bool // Idempotency-Key
	}{
		{"POST without body", http.MethodPost, "", false},
		{"POST with body", http.MethodPost, `{"order":1}`, false},
		{"PATCH with body", http.MethodPatch, `{"qty":2}`, false},
		// A body cannot go twice: a key does not make it replayable.
		{"POST with body and Idempotency-Key", http.MethodPost, `{"order":2}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var seen []string
			u := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				mu.Lock()
				seen = append(seen, r.Method+" "+string(b))
				mu.Unlock()
				_, _ = io.WriteString(w, "ok")
			}), func(s *http.Server) { s.IdleTimeout = 50 * time.Millisecond })
			tr := newTransport(t)
			roundTrip(t, tr, newRequest(t, http.MethodGet, u.URL, nil))
			u.waitClosed(t) // the upstream closed the pooled connection

			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			req := newRequest(t, tt.method, u.URL, body)
			if tt.key {
				req.Header.Set("Idempotency-Key", "k-1")
			}
			if _, got := roundTrip(t, tr, req); got != "ok" {
				t.Errorf("answer = %q", got)
			}
			mu.Lock()
			defer mu.Unlock()
			if want := []string{"GET ", tt.method + " " + tt.body}; !slices.Equal(seen, want) {
				t.Errorf("upstream saw %q, want %q", seen, want)
			}
			if n := u.opened.Load(); n != 2 {
				t.Errorf("upstream accepted %d connections, want 2", n)
			}
		})
	}
}

// dropper is a raw upstream that answers the first request on its first
// connection, then reads every request and closes without an answer: a
// request that reached a server which died on it.
type dropper struct {
	ln    net.Listener
	mu    sync.Mutex
	seen  []string
	conns []net.Conn
	wg    sync.WaitGroup
}

func newDropper(t *testing.T) *dropper {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &dropper{ln: ln}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		for i := 1; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d.mu.Lock()
			d.conns = append(d.conns, c)
			d.mu.Unlock()
			d.wg.Add(1)
			go d.serve(c, i)
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		d.mu.Lock()
		for _, c := range d.conns {
			_ = c.Close()
		}
		d.mu.Unlock()
		d.wg.Wait()
	})
	return d
}

func (d *dropper) serve(c net.Conn, n int) {
	defer d.wg.Done()
	defer c.Close()
	br := bufio.NewReader(c)
	for answer := n == 1; ; answer = false {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		d.mu.Lock()
		d.seen = append(d.seen, fmt.Sprintf("%s on conn %d", req.Method, n))
		d.mu.Unlock()
		if !answer {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	}
}

func TestTransport_RetriesOnlyReplayableRequestsAndOnlyOnce(t *testing.T) {
	tests := []struct {
		name   string
		method string
		header string
		body   string
		want   []string
	}{
		{"GET is retried once, on a fresh connection", http.MethodGet, "", "",
			[]string{"GET on conn 1", "GET on conn 1", "GET on conn 2"}},
		{"HEAD is retried once", http.MethodHead, "", "",
			[]string{"GET on conn 1", "HEAD on conn 1", "HEAD on conn 2"}},
		{"POST with Idempotency-Key is retried once", http.MethodPost, "Idempotency-Key", "",
			[]string{"GET on conn 1", "POST on conn 1", "POST on conn 2"}},
		{"POST is not retried", http.MethodPost, "", "",
			[]string{"GET on conn 1", "POST on conn 1"}},
		{"DELETE is not retried", http.MethodDelete, "", "",
			[]string{"GET on conn 1", "DELETE on conn 1"}},
		{"a body is never replayed, keyed or not", http.MethodPost, "Idempotency-Key", "data",
			[]string{"GET on conn 1", "POST on conn 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDropper(t)
			tr := newTransport(t)
			url := "http://" + d.ln.Addr().String() + "/"
			if _, got := roundTrip(t, tr, newRequest(t, http.MethodGet, url, nil)); got != "ok" {
				t.Fatalf("first answer = %q", got)
			}

			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			req := newRequest(t, tt.method, url, body)
			if tt.header != "" {
				req.Header.Set(tt.header, "k-1")
			}
			if res, err := tr.RoundTrip(req); err == nil {
				_ = res.Body.Close()
				t.Fatalf("got %d from a server that never answers", res.StatusCode)
			}
			d.mu.Lock()
			defer d.mu.Unlock()
			if !slices.Equal(d.seen, tt.want) {
				t.Errorf("server saw %q, want %q", d.seen, tt.want)
			}
		})
	}
}

func TestTransport_CancelsWithContext(t *testing.T) {
	type event struct{}
	entered := make(chan event, 1)
	upstreamDone := make(chan error, 1)
	u := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/quick" {
			_, _ = io.WriteString(w, "quick")
			return
		}
		if r.URL.Path == "/stream" {
			_, _ = io.WriteString(w, "first")
			w.(http.Flusher).Flush()
		}
		entered <- event{}
		select {
		case <-r.Context().Done(): // net/http: the client's connection closed
			upstreamDone <- r.Context().Err()
		case <-time.After(guard):
			upstreamDone <- errors.New("the transport kept the connection open")
		}
	}))

	t.Run("cancel while waiting for the answer", func(t *testing.T) {
		tr := newTransport(t)
		ctx, cancel := context.WithCancel(t.Context())
		go func() {
			select {
			case <-entered:
			case <-time.After(guard):
			}
			cancel()
		}()
		req := newRequest(t, http.MethodGet, u.URL+"/wait", nil).WithContext(ctx)
		if _, err := tr.RoundTrip(req); !errors.Is(err, context.Canceled) {
			t.Errorf("RoundTrip = %v, want context.Canceled", err)
		}
		if err := recv(t, upstreamDone); err == nil || !errors.Is(err, context.Canceled) {
			t.Errorf("upstream: %v", err)
		}
	})
	t.Run("deadline while waiting for the answer", func(t *testing.T) {
		tr := newTransport(t)
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		req := newRequest(t, http.MethodGet, u.URL+"/wait", nil).WithContext(ctx)
		if _, err := tr.RoundTrip(req); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("RoundTrip = %v, want context.DeadlineExceeded", err)
		}
		recv(t, entered)
		if err := recv(t, upstreamDone); !errors.Is(err, context.Canceled) {
			t.Errorf("upstream: %v", err)
		}
	})
	t.Run("cancel while reading the body", func(t *testing.T) {
		tr := newTransport(t)
		before := u.opened.Load()
		ctx, cancel := context.WithCancel(t.Context())
		res, err := tr.RoundTrip(newRequest(t, http.MethodGet, u.URL+"/stream", nil).WithContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		recv(t, entered)
		if _, err := io.ReadFull(res.Body, make([]byte, 5)); err != nil {
			t.Fatal(err)
		}
		cancel()
		if _, err := io.ReadAll(res.Body); err == nil {
			t.Error("body read ended cleanly after the cancel")
		}
		_ = res.Body.Close()
		if err := recv(t, upstreamDone); !errors.Is(err, context.Canceled) {
			t.Errorf("upstream: %v", err)
		}
		// The connection was not pooled.
		roundTrip(t, tr, newRequest(t, http.MethodGet, u.URL+"/quick", nil))
		if n := u.opened.Load() - before; n != 2 {
			t.Errorf("upstream accepted %d connections, want 2", n)
		}
	})
}

func TestTransport_DoesNotSendRequestWhoseContextIsDone(t *testing.T) {
	// A request cancelled before it was sent must not reach the upstream:
	// for a POST the caller would be told it failed while it ran.
	var posts atomic.Int32
	u := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			posts.Add(1)
		}
		_, _ = io.WriteString(w, "ok")
	}))
	tr := newTransport(t)
	for range 10 {
		roundTrip(t, tr, newRequest(t, http.MethodGet, u.URL, nil)) // a pooled connection
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		res, err := tr.RoundTrip(newRequest(t, http.MethodPost, u.URL, nil).WithContext(ctx))
		if err == nil {
			_ = res.Body.Close()
		}
		if !errors.Is(err, context.Canceled) {
			t.Errorf("RoundTrip = %v, want context.Canceled", err)
		}
	}
	if n := posts.Load(); n != 0 {
		t.Errorf("the upstream executed %d of 10 POSTs cancelled before they were sent", n)
	}
}

func TestTransport_BodyReadAfterCancelReturnsContextError(t *testing.T) {
	// ReverseProxy stays quiet only for rerr == context.Canceled: any other
	// error logs a line for every client that leaves mid-stream.
	u := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "first")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	tr := newTransport(t)
	ctx, cancel := context.WithCancel(t.Context())
	res, err := tr.RoundTrip(newRequest(t, http.MethodGet, u.URL, nil).WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if _, err := io.ReadFull(res.Body, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := res.Body.Read(make([]byte, 10)); err != context.Canceled {
		t.Errorf("body Read after cancel = %v, want context.Canceled", err)
	}
}

func TestTransport_FallsBack(t *testing.T) {
	u := newUpstream(t, http.NotFoundHandler())
	tests := []struct {
		name  string
		build func() *http.Request
	}{
		{"https", func() *http.Request {
			return newRequest(t, http.MethodGet, "https://"+u.host()+"/", nil)
		}},
		{"Upgrade", func() *http.Request {
			req := newRequest(t, http.MethodGet, u.URL, nil)
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "websocket")
			return req
		}},
		{"trailers", func() *http.Request {
			req := newRequest(t, http.MethodPost, u.URL, strings.NewReader("data"))
			req.Trailer = http.Header{"X-Checksum": nil}
			return req
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.build()
			var got *http.Request
			tr := h1.New(roundTripFunc(func(r *http.Request) (*http.Response, error) {
				got = r
				return &http.Response{StatusCode: 299, Body: http.NoBody, Request: r}, nil
			}))
			res, err := tr.RoundTrip(req)
			if err != nil || res.StatusCode != 299 {
				t.Fatalf("RoundTrip = %v, %v; want the fallback's 299", res, err)
			}
			if got != req {
				t.Error("the fallback did not get the request itself")
			}
		})
	}
	if n := u.opened.Load(); n != 0 {
		t.Errorf("the transport dialed %d connections itself", n)
	}
}

// capture is a raw upstream that records the head of each request as it
// came on the wire, and its decoded body.
type capture struct {
	addr  string
	heads chan string
	body  chan string
}

func newCapture(t *testing.T) *capture {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cp := &capture{addr: ln.Addr().String(), heads: make(chan string, 16), body: make(chan string, 16)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetReadDeadline(time.Now().Add(guard))
				var raw bytes.Buffer
				br := bufio.NewReader(io.TeeReader(c, &raw))
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				head, _, _ := strings.Cut(raw.String(), "\r\n\r\n")
				b, err := io.ReadAll(req.Body)
				if err != nil {
					b = []byte("body error: " + err.Error())
				}
				cp.heads <- head
				cp.body <- string(b)
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	return cp
}

func TestTransport_WritesRequestFraming(t *testing.T) {
	cp := newCapture(t)
	url := "http://" + cp.addr + "/path?q=1"
	unknownLength := func() io.Reader { return io.MultiReader(strings.NewReader("hel"), strings.NewReader("lo")) }

	tests := []struct {
		name     string
		build    func() *http.Request
		wantLine []string // lines the head has
		noLine   []string // header names it must not have
		wantBody string
	}{
		{"GET has no framing", func() *http.Request { return newRequest(t, http.MethodGet, url, nil) },
			[]string{"GET /path?q=1 HTTP/1.1", "Host: " + cp.addr}, []string{"Content-Length", "Transfer-Encoding", "Connection"}, ""},
		{"bodiless POST says Content-Length: 0", func() *http.Request { return newRequest(t, http.MethodPost, url, nil) },
			[]string{"Content-Length: 0"}, []string{"Transfer-Encoding"}, ""},
		{"bodiless PUT says Content-Length: 0", func() *http.Request { return newRequest(t, http.MethodPut, url, nil) },
			[]string{"Content-Length: 0"}, []string{"Transfer-Encoding"}, ""},
		{"known length", func() *http.Request { return newRequest(t, http.MethodPost, url, strings.NewReader("hello")) },
			[]string{"Content-Length: 5"}, []string{"Transfer-Encoding"}, "hello"},
		{"unknown length is chunked", func() *http.Request { return newRequest(t, http.MethodPost, url, unknownLength()) },
			[]string{"Transfer-Encoding: chunked"}, []string{"Content-Length"}, "hello"},
		{"length -1 is chunked", func() *http.Request {
			req := newRequest(t, http.MethodPut, url, unknownLength())
			req.ContentLength = -1
			return req
		}, []string{"Transfer-Encoding: chunked"}, []string{"Content-Length"}, "hello"},
		{"Host override and headers", func() *http.Request {
			req := newRequest(t, http.MethodGet, url, nil)
			req.Host = "api.example"
			req.Header.Set("X-Request-Id", "r-1")
			req.Header["User-Agent"] = []string{""} // sends none
			req.Header.Set("Content-Length", "99")  // the transport frames, not the caller
			return req
		}, []string{"Host: api.example", "X-Request-Id: r-1"}, []string{"User-Agent", "Content-Length"}, ""},
		{"Close", func() *http.Request {
			req := newRequest(t, http.MethodGet, url, nil)
			req.Close = true
			return req
		}, []string{"Connection: close"}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTransport(t)
			roundTrip(t, tr, tt.build())
			head, body := <-cp.heads, <-cp.body
			lines := strings.Split(head, "\r\n")
			for _, want := range tt.wantLine {
				if !slices.Contains(lines, want) {
					t.Errorf("head lacks %q:\n%s", want, head)
				}
			}
			for _, name := range tt.noLine {
				for _, l := range lines[1:] {
					if strings.HasPrefix(strings.ToLower(l), strings.ToLower(name)+":") {
						t.Errorf("head has %q:\n%s", l, head)
					}
				}
			}
			if body != tt.wantBody {
				t.Errorf("body = %q, want %q", body, tt.wantBody)
			}
		})
	}

	t.Run("body shorter than declared", func(t *testing.T) {
		tr := newTransport(t)
		req := newRequest(t, http.MethodPost, url, strings.NewReader("hello"))
		req.ContentLength = 10
		if res, err := tr.RoundTrip(req); err == nil {
			_ = res.Body.Close()
			t.Error("RoundTrip sent a body 5 bytes short of its Content-Length")
		}
	})
}

func TestTransport_RejectsInvalidRequests(t *testing.T) {
	u := newUpstream(t, http.NotFoundHandler())
	tests := []struct {
		name   string
		mutate func(*http.Request)
	}{
		{"no host", func(r *http.Request) { r.URL.Host = "" }},
		{"method with a space", func(r *http.Request) { r.Method = "GE T" }},
		{"empty method", func(r *http.Request) { r.Method = "" }},
		{"header value with CRLF", func(r *http.Request) { r.Header.Set("X-A", "a\r\nInjected: yes") }},
		{"header name with a space", func(r *http.Request) { r.Header["Bad Name"] = []string{"v"} }},
		{"Host with a space", func(r *http.Request) { r.Host = "a b" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTransport(t)
			body := &closeRecorder{Reader: strings.NewReader("data")}
			req := newRequest(t, http.MethodPost, u.URL, body)
			tt.mutate(req)
			if res, err := tr.RoundTrip(req); err == nil {
				_ = res.Body.Close()
				t.Fatal("RoundTrip accepted it")
			}
			if !body.closed.Load() {
				t.Error("the request body was not closed")
			}
		})
	}
	if n := u.opened.Load(); n != 0 {
		t.Errorf("dialed %d connections for invalid requests", n)
	}
}

type closeRecorder struct {
	io.Reader
	closed atomic.Bool
}

func (c *closeRecorder) Close() error {
	c.closed.Store(true)
	return nil
}

func TestTransport_SkipsInterimAnswers(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</app.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, "final")
	}))
	tr := newTransport(t)
	for range 2 {
		res, got := roundTrip(t, tr, newRequest(t, http.MethodGet, u.URL, nil))
		if res.StatusCode != http.StatusCreated || got != "final" {
			t.Errorf("answer %d %q, want 201 final", res.StatusCode, got)
		}
	}
	if n := u.opened.Load(); n != 1 {
		t.Errorf("upstream accepted %d connections, want 1", n)
	}

	t.Run("101 is an error", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
				_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
			}
		}()
		res, err := newTransport(t).RoundTrip(newRequest(t, http.MethodGet, "http://"+ln.Addr().String(), nil))
		if err == nil {
			_ = res.Body.Close()
			t.Fatalf("got %d, want an error", res.StatusCode)
		}
		if !strings.Contains(err.Error(), "101") {
			t.Errorf("error = %v", err)
		}
	})
}

func TestTransport_CloseIdleConnections(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	var fallbackClosed atomic.Bool
	tr := h1.New(&idleCloser{closed: &fallbackClosed})

	roundTrip(t, tr, newRequest(t, http.MethodGet, u.URL, nil))
	tr.CloseIdleConnections()
	u.waitClosed(t)
	if !fallbackClosed.Load() {
		t.Error("the fallback's idle connections were not closed")
	}
	roundTrip(t, tr, newRequest(t, http.MethodGet, u.URL, nil))
	if n := u.opened.Load(); n != 2 {
		t.Errorf("upstream accepted %d connections, want 2", n)
	}
	tr.CloseIdleConnections()
}

type idleCloser struct{ closed *atomic.Bool }

func (*idleCloser) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("unused")
}
func (c *idleCloser) CloseIdleConnections() { c.closed.Store(true) }

func TestTransport_KeepsAtMostMaxIdlePerHost(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	tr := newTransport(t)
	tr.MaxIdlePerHost = 1

	// Two answers held unread at once take two connections.
	open := func() (*http.Response, *http.Response) {
		a, err := tr.RoundTrip(newRequest(t, http.MethodGet, u.URL, nil))
		if err != nil {
			t.Fatal(err)
		}
		b, err := tr.RoundTrip(newRequest(t, http.MethodGet, u.URL, nil))
		if err != nil {
			t.Fatal(err)
		}
		return a, b
	}
	drain := func(res *http.Response) {
		_, _ = io.ReadAll(res.Body)
		_ = res.Body.Close()
	}
	a, b := open()
	drain(a) // pooled
	drain(b) // the pool is full: closed
	u.waitClosed(t)
	if n := u.opened.Load(); n != 2 {
		t.Fatalf("upstream accepted %d connections, want 2", n)
	}
	a, b = open() // one from the pool, one new
	drain(a)
	drain(b)
	if n := u.opened.Load(); n != 3 {
		t.Errorf("upstream accepted %d connections, want 3", n)
	}
}

func TestTransport_ExpiresIdleConnections(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	tr := newTransport(t)
	tr.IdleTimeout = time.Nanosecond // every pooled connection is too old

	roundTrip(t, tr, newRequest(t, http.MethodGet, u.URL, nil))
	roundTrip(t, tr, newRequest(t, http.MethodGet, u.URL, nil))
	u.waitClosed(t) // the expired one was closed, not left open
	if n := u.opened.Load(); n != 2 {
		t.Errorf("upstream accepted %d connections, want 2", n)
	}
}

func TestTransport_SweepsIdleConnectionsOfEveryHost(t *testing.T) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })

	t.Run("fresh ones stay", func(t *testing.T) {
		a, b := newUpstream(t, handler), newUpstream(t, handler)
		tr := newTransport(t)
		for _, u := range []*upstream{a, b, a, b} {
			roundTrip(t, tr, newRequest(t, http.MethodGet, u.URL, nil))
		}
		if na, nb := a.opened.Load(), b.opened.Load(); na != 1 || nb != 1 {
			t.Errorf("connections opened: %d and %d, want one each", na, nb)
		}
	})
	t.Run("expired ones close, whatever host is asked for", func(t *testing.T) {
		a, b := newUpstream(t, handler), newUpstream(t, handler)
		tr := newTransport(t)
		tr.IdleTimeout = time.Nanosecond // every pooled connection is too old
		roundTrip(t, tr, newRequest(t, http.MethodGet, a.URL, nil))
		// A request to b closes the one pooled for a: an upstream that went
		// away would keep it open otherwise.
		roundTrip(t, tr, newRequest(t, http.MethodGet, b.URL, nil))
		a.waitClosed(t)
		roundTrip(t, tr, newRequest(t, http.MethodGet, a.URL, nil))
		if n := a.opened.Load(); n != 2 {
			t.Errorf("a accepted %d connections, want 2", n)
		}
	})
}

func TestTransport_ServesConcurrentCallers(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.URL.Path)
	}))
	tr := newTransport(t)
	const callers, each = 8, 20
	var wg sync.WaitGroup
	for g := range callers {
		wg.Go(func() {
			for i := range each {
				path := fmt.Sprintf("/%d/%d", g, i)
				res, err := tr.RoundTrip(newRequest(t, http.MethodGet, u.URL+path, nil))
				if err != nil {
					t.Errorf("%s: %v", path, err)
					return
				}
				b, err := io.ReadAll(res.Body)
				_ = res.Body.Close()
				if err != nil || string(b) != path {
					t.Errorf("%s: got %q, %v", path, b, err)
				}
			}
		})
	}
	wg.Wait()
	// A connection carries one request at a time, and goes back to the pool.
	if n := u.opened.Load(); n < 1 || n > callers {
		t.Errorf("upstream accepted %d connections for %d callers", n, callers)
	}
}

func TestTransport_ProxiesThroughServer(t *testing.T) {
	// The gateway's shape: net/http client -> h1.Server -> ReverseProxy over
	// h1.Transport -> net/http upstream.
	u := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo":
			// Read first: net/http closes a connection whose handler
			// answered while much of the body was unread.
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "application/octet-stream")
			_, _ = w.Write(b)
		case "/stream":
			for i := range 3 {
				_, _ = fmt.Fprintf(w, "event %d\n", i)
				w.(http.Flusher).Flush()
			}
		default:
			_, _ = fmt.Fprintf(w, "%s %s host=%s", r.Method, r.URL.Path, r.Host)
		}
	}))
	target, err := url.Parse(u.URL)
	if err != nil {
		t.Fatal(err)
	}
	tr := h1.New(http.DefaultTransport.(*http.Transport).Clone())
	t.Cleanup(tr.CloseIdleConnections)
	proxy := &httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport:  tr,
		BufferPool: &h1.Buffers{},
	}
	gw := startServer(t, &h1.Server{Handler: proxy})
	ct := &http.Transport{}
	t.Cleanup(ct.CloseIdleConnections)
	client := &http.Client{Transport: ct}

	big := bytes.Repeat([]byte("0123456789"), 6<<10) // 60 KiB: more than the server buffers, within what the transport sends itself
	tests := []struct {
		method, path string
		body         []byte
		want         string
	}{
		{http.MethodGet, "/a", nil, "GET /a host=" + u.host()},
		{http.MethodPost, "/echo", big, string(big)},
		{http.MethodGet, "/stream", nil, "event 0\nevent 1\nevent 2\n"},
		{http.MethodPost, "/echo", []byte("small"), "small"},
		{http.MethodDelete, "/b", nil, "DELETE /b host=" + u.host()},
	}
	for _, tt := range tests {
		var body io.Reader
		if tt.body != nil {
			body = bytes.NewReader(tt.body)
		}
		res, err := client.Do(newRequest(t, tt.method, "http://"+gw.addr+tt.path, body))
		if err != nil {
			t.Fatalf("%s %s: %v", tt.method, tt.path, err)
		}
		got, err := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if err != nil || res.StatusCode != http.StatusOK || string(got) != tt.want {
			t.Errorf("%s %s: %d, %d bytes, %v; want %d bytes", tt.method, tt.path, res.StatusCode, len(got), err, len(tt.want))
		}
	}
	if n := gw.ln.n.Load(); n != 1 {
		t.Errorf("the gateway accepted %d client connections, want 1", n)
	}
	if n := u.opened.Load(); n != 1 {
		t.Errorf("the upstream accepted %d connections from the gateway, want 1", n)
	}
}

func TestBuffers_Hands32KiBBuffers(t *testing.T) {
	var b h1.Buffers
	buf := b.Get()
	if len(buf) != 32<<10 {
		t.Fatalf("len = %d, want 32 KiB", len(buf))
	}
	b.Put(buf)
	if again := b.Get(); len(again) != 32<<10 {
		t.Errorf("after Put: len = %d, want 32 KiB", len(again))
	}
}

// earlyRefuser is a raw upstream that answers 413 to every request as soon
// as it has the head, then reads nothing more for a while (a busy server)
// before it closes: a client that writes the whole body before it reads
// stalls behind full socket buffers, then meets a reset.
func earlyRefuser(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				_, _ = io.WriteString(c, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big!")
				time.Sleep(time.Second)
			}()
		}
	}()
	return ln.Addr().String()
}

func TestTransport_HearsAnEarlyAnswerToALargeBody(t *testing.T) {
	// The caller must get the answer, not a write error: such a body goes
	// through the fallback, which reads while it writes.
	addr := earlyRefuser(t)
	fallback := &http.Transport{}
	t.Cleanup(fallback.CloseIdleConnections)
	tr := h1.New(fallback)
	t.Cleanup(tr.CloseIdleConnections)

	body := bytes.Repeat([]byte("x"), 4<<20)
	req := newRequest(t, http.MethodPost, "http://"+addr+"/upload", bytes.NewReader(body))
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("an early answer was lost: %v", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413", res.StatusCode)
	}
}

func TestServer_ProxiesAnEarlyAnswerWhileTheBodyIsStillBeingRead(t *testing.T) {
	// Through the server and a proxy over the transport: the fallback
	// reads the client's body on a goroutine of its own, and may still be
	// reading when the answer is written and the handler has returned.
	addr := earlyRefuser(t)
	fallback := &http.Transport{}
	t.Cleanup(fallback.CloseIdleConnections)
	tr := h1.New(fallback)
	target := &url.URL{Scheme: "http", Host: addr}
	gw := startServer(t, &h1.Server{ReadTimeout: guard, Handler: &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport: tr,
	}})
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	for range 3 {
		res, err := client.Post("http://"+gw.addr+"/upload", "application/octet-stream", bytes.NewReader(bytes.Repeat([]byte("x"), 1<<20)))
		if err != nil {
			t.Fatalf("POST: %v", err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		_ = res.Body.Close()
		if res.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d, want the upstream's 413", res.StatusCode)
		}
	}
}

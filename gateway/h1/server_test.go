package h1_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mercato-shop/mercato/gateway/h1"
)

// guard bounds every wait in these tests, only so that a broken behaviour
// fails instead of hanging; no test asserts how long anything takes.
const guard = 10 * time.Second

// countingListener counts the connections a server accepted, to prove
// keep-alive reuse.
type countingListener struct {
	net.Listener
	n atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

type testServer struct {
	addr     string
	ln       *countingListener
	served   chan struct{}
	serveErr error
}

// wait returns what Serve returned.
func (s *testServer) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-s.served:
		return s.serveErr
	case <-time.After(guard):
		t.Fatal("Serve did not return")
		return nil
	}
}

// startServer serves srv on a fresh loopback port until the test ends.
func startServer(t *testing.T, srv *h1.Server) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{addr: ln.Addr().String(), ln: &countingListener{Listener: ln}, served: make(chan struct{})}
	go func() {
		ts.serveErr = srv.Serve(ts.ln)
		close(ts.served)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		_ = ln.Close()
		if err := ts.wait(t); !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve = %v, want http.ErrServerClosed", err)
		}
	})
	return ts
}

// dial opens a raw client connection, for the tests where the bytes on the
// wire matter.
func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(guard))
	return c, bufio.NewReader(c)
}

// recv waits for what a handler reports.
func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(guard):
		t.Fatal("the handler never reported")
		panic("unreachable")
	}
}

func send(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatalf("write request: %v", err)
	}
}

// readResponse reads one answer to a request of the given method.
func readResponse(t *testing.T, br *bufio.Reader, method string) *http.Response {
	t.Helper()
	res, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	return res
}

func readBody(t *testing.T, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return string(b)
}

// expectClosed asserts that the server closes the connection with nothing
// more to say.
func expectClosed(t *testing.T, br *bufio.Reader) {
	t.Helper()
	rest, err := io.ReadAll(br)
	if len(rest) > 0 {
		t.Errorf("bytes after the answer: %q", rest)
	}
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("connection not closed by the server: %v", err)
	}
}

// lockedBuffer is a log sink written by server goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestServer_FramesAnswersByLength(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	srv := &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		// Several writes, as a handler copying a body makes.
		for p := big[:n]; len(p) > 0; {
			k := min(len(p), 1000)
			_, _ = w.Write(p[:k])
			p = p[k:]
		}
	})}
	ts := startServer(t, srv)

	tests := []struct {
		name       string
		proto      string
		connection string // the request's Connection header
		n          int
		wantLength int64 // -1: none
		wantChunk  bool
		wantConn   string // the answer's Connection header
		wantClose  bool
	}{
		{"empty", "HTTP/1.1", "", 0, 0, false, "", false},
		{"short", "HTTP/1.1", "", 5, 5, false, "", false},
		{"exactly the buffer", "HTTP/1.1", "", 4096, 4096, false, "", false},
		{"a byte past the buffer", "HTTP/1.1", "", 4097, -1, true, "", false},
		{"long", "HTTP/1.1", "", len(big), -1, true, "", false},
		{"HTTP/1.0 short", "HTTP/1.0", "", 5, 5, false, "close", true},
		{"HTTP/1.0 long ends with the connection", "HTTP/1.0", "", len(big), -1, false, "close", true},
		{"HTTP/1.0 keep-alive short", "HTTP/1.0", "keep-alive", 5, 5, false, "keep-alive", false},
		{"HTTP/1.0 keep-alive long", "HTTP/1.0", "keep-alive", len(big), -1, false, "close", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, br := dial(t, ts.addr)
			request := func(n int) string {
				s := fmt.Sprintf("GET /?n=%d %s\r\nHost: test\r\n", n, tt.proto)
				if tt.connection != "" {
					s += "Connection: " + tt.connection + "\r\n"
				}
				return s + "\r\n"
			}
			send(t, c, request(tt.n))
			res := readResponse(t, br, http.MethodGet)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status = %d", res.StatusCode)
			}
			if res.ContentLength != tt.wantLength {
				t.Errorf("Content-Length = %d, want %d", res.ContentLength, tt.wantLength)
			}
			if chunked := len(res.TransferEncoding) == 1 && res.TransferEncoding[0] == "chunked"; chunked != tt.wantChunk {
				t.Errorf("Transfer-Encoding = %q, want chunked: %v", res.TransferEncoding, tt.wantChunk)
			}
			// ReadResponse turns Connection: close into res.Close.
			if res.Close != (tt.wantConn == "close") {
				t.Errorf("announces close: %v, want Connection: %q", res.Close, tt.wantConn)
			}
			if tt.wantConn == "keep-alive" && res.Header.Get("Connection") != "keep-alive" {
				t.Errorf("Connection = %q, want keep-alive", res.Header.Get("Connection"))
			}
			if got := readBody(t, res); got != string(big[:tt.n]) {
				t.Errorf("body: got %d bytes, want %d", len(got), tt.n)
			}
			if tt.wantClose {
				expectClosed(t, br)
				return
			}
			// The connection carries the next request: the framing was exact.
			send(t, c, request(3))
			res = readResponse(t, br, http.MethodGet)
			if got := readBody(t, res); got != "012" {
				t.Errorf("second answer on the connection = %q", got)
			}
		})
	}
	if got := ts.ln.n.Load(); got != int32(len(tests)) {
		t.Errorf("accepted %d connections, want %d (one per case)", got, len(tests))
	}
}

func TestServer_KeepsDeclaredContentLength(t *testing.T) {
	long := strings.Repeat("x", 10000)
	writeErr := make(chan error, 1)
	srv := &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/long":
			// A declared length is never turned into chunks.
			w.Header().Set("Content-Length", strconv.Itoa(len(long)))
			_, _ = io.WriteString(w, long)
		case "/short-of-declared":
			w.Header().Set("Content-Length", "10")
			_, _ = io.WriteString(w, "12345")
		case "/past-declared":
			w.Header().Set("Content-Length", "2")
			_, _ = io.WriteString(w, "12")
			_, err := io.WriteString(w, "3")
			writeErr <- err
		}
	})}
	ts := startServer(t, srv)

	t.Run("long", func(t *testing.T) {
		c, br := dial(t, ts.addr)
		send(t, c, "GET /long HTTP/1.1\r\nHost: test\r\n\r\n")
		res := readResponse(t, br, http.MethodGet)
		if res.ContentLength != int64(len(long)) || res.TransferEncoding != nil {
			t.Errorf("Content-Length %d, Transfer-Encoding %q; want %d and none", res.ContentLength, res.TransferEncoding, len(long))
		}
		if got := readBody(t, res); got != long {
			t.Errorf("body of %d bytes", len(got))
		}
	})
	t.Run("handler writes less than declared", func(t *testing.T) {
		// The client waits for bytes that never come: only closing ends it.
		c, br := dial(t, ts.addr)
		send(t, c, "GET /short-of-declared HTTP/1.1\r\nHost: test\r\n\r\n")
		res := readResponse(t, br, http.MethodGet)
		got, err := io.ReadAll(res.Body)
		if string(got) != "12345" || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("body %q, %v; want 12345 then io.ErrUnexpectedEOF", got, err)
		}
	})
	t.Run("handler writes more than declared", func(t *testing.T) {
		c, br := dial(t, ts.addr)
		send(t, c, "GET /past-declared HTTP/1.1\r\nHost: test\r\n\r\n")
		res := readResponse(t, br, http.MethodGet)
		if got := readBody(t, res); got != "12" {
			t.Errorf("body = %q, want 12", got)
		}
		if err := recv(t, writeErr); !errors.Is(err, http.ErrContentLength) {
			t.Errorf("Write = %v, want http.ErrContentLength", err)
		}
	})
}

func TestServer_SendsNoBodyForHeadAndBodilessStatuses(t *testing.T) {
	writeErr := make(chan error, 1)
	srv := &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hello":
			_, _ = io.WriteString(w, "hello")
		case "/long":
			_, _ = io.WriteString(w, strings.Repeat("y", 10000))
		case "/204", "/304":
			code, _ := strconv.Atoi(r.URL.Path[1:])
			w.Header().Set("Content-Length", "5") // not for a bodiless status
			w.WriteHeader(code)
			_, err := io.WriteString(w, "hello")
			writeErr <- err
		case "/next":
			_, _ = io.WriteString(w, "next")
		}
	})}
	ts := startServer(t, srv)

	tests := []struct {
		method, path string
		wantStatus   int
		wantLength   string // the Content-Length header
		wantWriteErr error
	}{
		{http.MethodHead, "/hello", 200, "5", nil},
		{http.MethodHead, "/long", 200, "", nil},
		{http.MethodGet, "/204", 204, "", http.ErrBodyNotAllowed},
		{http.MethodGet, "/304", 304, "", http.ErrBodyNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			c, br := dial(t, ts.addr)
			// The next request rides behind: had any body byte gone out, its
			// answer would not parse.
			send(t, c, tt.method+" "+tt.path+" HTTP/1.1\r\nHost: test\r\n\r\nGET /next HTTP/1.1\r\nHost: test\r\n\r\n")
			res := readResponse(t, br, tt.method)
			if res.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d", res.StatusCode, tt.wantStatus)
			}
			if tt.wantLength != "" {
				if got := res.Header.Get("Content-Length"); got != tt.wantLength {
					t.Errorf("Content-Length = %q, want %q", got, tt.wantLength)
				}
			}
			if tt.wantStatus != 200 && (res.Header.Get("Content-Length") != "" || res.TransferEncoding != nil) {
				t.Errorf("%d carries framing: Content-Length %q, Transfer-Encoding %q", tt.wantStatus, res.Header.Get("Content-Length"), res.TransferEncoding)
			}
			_ = readBody(t, res)
			res = readResponse(t, br, http.MethodGet)
			if got := readBody(t, res); got != "next" {
				t.Errorf("next answer = %q, want next", got)
			}
			if tt.wantWriteErr != nil {
				if err := recv(t, writeErr); !errors.Is(err, tt.wantWriteErr) {
					t.Errorf("Write = %v, want %v", err, tt.wantWriteErr)
				}
			}
		})
	}
}

type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

// expectProblem reads a refusal: a problem+json answer, then the close.
func expectProblem(t *testing.T, br *bufio.Reader, status int, detail string) {
	t.Helper()
	res := readResponse(t, br, http.MethodGet)
	if res.StatusCode != status {
		t.Fatalf("status = %d, want %d", res.StatusCode, status)
	}
	if got := res.Header.Get("Content-Type"); got != "application/problem+json" {
		t.Errorf("Content-Type = %q", got)
	}
	if !res.Close {
		t.Error("a refusal does not announce Connection: close")
	}
	var p problem
	if err := json.NewDecoder(res.Body).Decode(&p); err != nil {
		t.Fatalf("problem body: %v", err)
	}
	if p.Status != status || p.Detail != detail || p.Title != http.StatusText(status) {
		t.Errorf("problem = %+v, want status %d, detail %q", p, status, detail)
	}
	expectClosed(t, br)
}

func TestServer_RejectsMalformedRequests(t *testing.T) {
	var called atomic.Bool
	srv := &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { called.Store(true) })}
	ts := startServer(t, srv)

	tests := []struct {
		name, request string
		wantDetail    string
	}{
		{"garbage", "HELLO\r\n\r\n", "malformed request"},
		{"HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n", "missing Host header"},
		{"bad Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "malformed Host header"},
		{"HTTP/2 version", "GET / HTTP/2.0\r\nHost: test\r\n\r\n", "unsupported protocol version"},
		{"header line without colon", "GET / HTTP/1.1\r\nHost: test\r\nbroken\r\n\r\n", "malformed request"},
		{"control byte in a value", "GET / HTTP/1.1\r\nHost: test\r\nX-A: a\x01b\r\n\r\n", "malformed request"},
		{"bad Content-Length", "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: x\r\n\r\n", "malformed request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, br := dial(t, ts.addr)
			send(t, c, tt.request)
			expectProblem(t, br, http.StatusBadRequest, tt.wantDetail)
		})
	}
	if called.Load() {
		t.Error("the handler ran for a malformed request")
	}

	t.Run("HTTP/1.0 needs no Host", func(t *testing.T) {
		c, br := dial(t, ts.addr)
		send(t, c, "GET / HTTP/1.0\r\n\r\n")
		if res := readResponse(t, br, http.MethodGet); res.StatusCode != http.StatusOK {
			t.Errorf("status = %d, want 200", res.StatusCode)
		}
	})
}

func TestServer_RejectsTooLargeHead(t *testing.T) {
	var called atomic.Int32
	srv := &h1.Server{MaxHeaderBytes: 1 << 10, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { called.Add(1) })}
	ts := startServer(t, srv)

	t.Run("within the bound", func(t *testing.T) {
		c, br := dial(t, ts.addr)
		send(t, c, "GET / HTTP/1.1\r\nHost: test\r\nX-Pad: "+strings.Repeat("a", 512)+"\r\n\r\n")
		if res := readResponse(t, br, http.MethodGet); res.StatusCode != http.StatusOK {
			t.Errorf("status = %d, want 200", res.StatusCode)
		}
	})
	t.Run("past the bound", func(t *testing.T) {
		c, br := dial(t, ts.addr)
		// The head never ends: the server must stop reading on its own.
		go func() {
			_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: test\r\n")
			for range 64 {
				if _, err := io.WriteString(c, "X-Pad: "+strings.Repeat("a", 1000)+"\r\n"); err != nil {
					return // refused and closed
				}
			}
		}()
		expectProblem(t, br, http.StatusRequestHeaderFieldsTooLarge, "the request's head is too large")
	})
	if got := called.Load(); got != 1 {
		t.Errorf("handler ran %d times, want 1", got)
	}
}

func TestServer_RefusesUnsupportedExpect(t *testing.T) {
	var called atomic.Bool
	srv := &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { called.Store(true) })}
	ts := startServer(t, srv)

	tests := []struct{ name, request string }{
		{"unknown expectation", "POST / HTTP/1.1\r\nHost: test\r\nExpect: something\r\nContent-Length: 5\r\n\r\nhello"},
		{"100-continue over HTTP/1.0", "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, br := dial(t, ts.addr)
			send(t, c, tt.request)
			expectProblem(t, br, http.StatusExpectationFailed, "unsupported Expect header")
		})
	}
	if called.Load() {
		t.Error("the handler ran")
	}
}

func TestServer_SendsContinueOnFirstBodyRead(t *testing.T) {
	srv := &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Expect") != "" {
			http.Error(w, "Expect reached the handler", http.StatusInternalServerError)
			return
		}
		// An interim answer before the body is read: 100 Continue must
		// come after it, on the read, not when the head arrived.
		w.WriteHeader(http.StatusEarlyHints)
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = w.Write(b)
	})}
	ts := startServer(t, srv)
	c, br := dial(t, ts.addr)

	send(t, c, "POST / HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	for _, want := range []int{http.StatusEarlyHints, http.StatusContinue} {
		if res := readResponse(t, br, http.MethodPost); res.StatusCode != want {
			t.Fatalf("interim answer %d, want %d", res.StatusCode, want)
		}
	}
	send(t, c, "hello")
	res := readResponse(t, br, http.MethodPost)
	if got := readBody(t, res); res.StatusCode != http.StatusOK || got != "hello" {
		t.Errorf("final answer %d %q, want 200 hello", res.StatusCode, got)
	}
}

func TestServer_AnswersExpectContinueWithoutWaitingForTheBody(t *testing.T) {
	// A handler that refuses without reading (an auth check, say): the
	// client has not sent the body and will not until it hears something,
	// so the answer goes at once, and closes the connection rather than
	// wait for a body nobody wants.
	srv := &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, strings.Repeat("n", n))
	})}
	ts := startServer(t, srv)

	tests := []struct {
		name string
		n    int
	}{
		{"short answer", 2},
		{"streamed answer", 10000},
	}
	for _, tt := range tests {
		n := tt.n
		t.Run(tt.name, func(t *testing.T) {
			c, br := dial(t, ts.addr)
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second)) // fails sooner than the guard
			send(t, c, fmt.Sprintf("POST /?n=%d HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", n))
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer while the client waits for 100 Continue: %v", err)
			}
			if res.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status = %d, want 401 and no 100 Continue", res.StatusCode)
			}
			if got := readBody(t, res); len(got) != n {
				t.Errorf("body of %d bytes, want %d", len(got), n)
			}
			if !res.Close {
				t.Error("answer lacks Connection: close, yet the body it did not ask for will never be read")
			}
			expectClosed(t, br)
		})
	}
}

func TestServer_DrainsUnreadBodies(t *testing.T) {
	srv := &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ignored")
	})}
	ts := startServer(t, srv)

	tests := []struct {
		name      string
		size      int
		wantClose bool
	}{
		{"small body is drained", 10 << 10, false},
		{"exactly the drain bound", 256 << 10, false},
		{"past the drain bound", 256<<10 + 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, br := dial(t, ts.addr)
			head := fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n", tt.size)
			go func() {
				// The server may stop reading (and close) before all of it.
				_, _ = c.Write(append([]byte(head), make([]byte, tt.size)...))
				_, _ = io.WriteString(c, "GET /next HTTP/1.1\r\nHost: test\r\n\r\n")
			}()
			res := readResponse(t, br, http.MethodPost)
			if got := readBody(t, res); got != "ignored" {
				t.Errorf("answer = %q", got)
			}
			if tt.wantClose {
				expectClosed(t, br)
				return
			}
			res = readResponse(t, br, http.MethodGet)
			if got := readBody(t, res); got != "ignored" {
				t.Errorf("next answer = %q", got)
			}
		})
	}
}

func TestServer_AnnouncesCloseWhenBodyTooLongToDrain(t *testing.T) {
	// More body left unread than is worth draining: the answer must say
	// Connection: close, or a client pools a connection about to close.
	srv := &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ignored")
	})}
	ts := startServer(t, srv)
	c, br := dial(t, ts.addr)
	go func() {
		_, _ = fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n", 1<<20)
		_, _ = c.Write(make([]byte, 1<<20))
	}()
	res := readResponse(t, br, http.MethodPost)
	_ = readBody(t, res)
	if !res.Close {
		t.Error("answer lacks Connection: close, yet the server closes the connection")
	}
	expectClosed(t, br)
}

func TestServer_AnswersPipelinedRequestsInOrder(t *testing.T) {
	srv := &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, b)
	})}
	ts := startServer(t, srv)
	c, br := dial(t, ts.addr)

	// All three in one write: the server finds the later ones buffered.
	send(t, c, "GET /a HTTP/1.1\r\nHost: test\r\n\r\n"+
		"POST /b HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\nxyz"+
		"POST /c HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"+
		"GET /d HTTP/1.1\r\nHost: test\r\n\r\n")
	for _, want := range []string{"GET /a ", "POST /b xyz", "POST /c hi", "GET /d "} {
		res := readResponse(t, br, http.MethodGet)
		if got := readBody(t, res); got != want {
			t.Errorf("answer %q, want %q", got, want)
		}
	}
	if n := ts.ln.n.Load(); n != 1 {
		t.Errorf("accepted %d connections, want 1", n)
	}
}

func TestServer_FlushStreamsBeforeTheHandlerEnds(t *testing.T) {
	more := make(chan struct{}, 1)
	flushErr := make(chan error, 1)
	srv := &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "first")
		flushErr <- http.NewResponseController(w).Flush()
		<-more // the client has seen "first"
		_, _ = io.WriteString(w, "second")
	})}
	ts := startServer(t, srv)
	c, br := dial(t, ts.addr)

	send(t, c, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
	res := readResponse(t, br, http.MethodGet)
	if err := recv(t, flushErr); err != nil {
		t.Fatalf("Flush = %v", err)
	}
	if len(res.TransferEncoding) != 1 || res.TransferEncoding[0] != "chunked" {
		t.Errorf("a flushed answer of unknown length is not chunked: %q", res.TransferEncoding)
	}
	first := make([]byte, 5)
	if _, err := io.ReadFull(res.Body, first); err != nil || string(first) != "first" {
		t.Fatalf("read %q, %v before the handler ended", first, err)
	}
	more <- struct{}{}
	if rest := readBody(t, res); rest != "second" {
		t.Errorf("rest = %q", rest)
	}
	// The connection stays usable after a streamed answer.
	more <- struct{}{}
	send(t, c, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
	res = readResponse(t, br, http.MethodGet)
	recv(t, flushErr)
	if got := readBody(t, res); got != "firstsecond" {
		t.Errorf("second answer = %q", got)
	}
}

func TestServer_CancelsContextWhenStreamingClientLeaves(t *testing.T) {
	ctxErr := make(chan error, 1)
	srv := &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != http.NoBody {
			_, _ = io.ReadAll(r.Body) // the watch starts once the body is read
		}
		_, _ = io.WriteString(w, "event")
		w.(http.Flusher).Flush()
		ctxErr <- contextEnd(r)
	})}
	ts := startServer(t, srv)

	for _, request := range []string{
		"GET /events HTTP/1.1\r\nHost: test\r\n\r\n",
		"POST /events HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\nhi",
	} {
		c, br := dial(t, ts.addr)
		send(t, c, request)
		res := readResponse(t, br, http.MethodGet)
		if _, err := io.ReadFull(res.Body, make([]byte, 5)); err != nil {
			t.Fatalf("no streamed bytes: %v", err)
		}
		_ = c.Close()
		if err := recv(t, ctxErr); !errors.Is(err, context.Canceled) {
			t.Errorf("%q: handler's context = %v, want context.Canceled", strings.Fields(request)[0], err)
		}
	}
}

func TestServer_CancelsContextWhenClientOfSlowRequestLeaves(t *testing.T) {
	// No Flush: a request still running a while after it arrived is
	// watched too, so a proxied call stops when its client goes.
	ctxErr := make(chan error, 1)
	srv := &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			ctxErr <- err
			return
		}
		ctxErr <- contextEnd(r)
	})}
	ts := startServer(t, srv)

	for _, request := range []string{
		"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n",
		"POST /slow HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\nhi",
	} {
		c, _ := dial(t, ts.addr)
		send(t, c, request)
		_ = c.Close()
		if err := recv(t, ctxErr); !errors.Is(err, context.Canceled) {
			t.Errorf("%q: handler's context = %v, want context.Canceled", strings.Fields(request)[0], err)
		}
	}
}

func TestServer_ResponseControllerDeadlines(t *testing.T) {
	t.Run("SetReadDeadline bounds the body", func(t *testing.T) {
		readErr := make(chan error, 1)
		srv := &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := http.NewResponseController(w).SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
				readErr <- err
				return
			}
			_, err := io.ReadAll(r.Body)
			readErr <- err
		})}
		ts := startServer(t, srv)
		c, br := dial(t, ts.addr)
		send(t, c, "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\nabc") // 7 bytes never come
		if err := recv(t, readErr); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("body read = %v, want os.ErrDeadlineExceeded", err)
		}
		res := readResponse(t, br, http.MethodPost)
		_ = readBody(t, res)
		expectClosed(t, br) // the rest of the body cannot be drained
	})
	t.Run("SetWriteDeadline bounds the answer", func(t *testing.T) {
		flushErr := make(chan error, 1)
		srv := &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rc := http.NewResponseController(w)
			if err := rc.SetWriteDeadline(time.Now().Add(-time.Second)); err != nil {
				flushErr <- err
				return
			}
			_, _ = io.WriteString(w, "late")
			flushErr <- rc.Flush()
		})}
		ts := startServer(t, srv)
		c, br := dial(t, ts.addr)
		send(t, c, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
		if err := recv(t, flushErr); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("Flush = %v, want os.ErrDeadlineExceeded", err)
		}
		expectClosed(t, br)
	})
}

func TestServer_ClearsWriteDeadlineBetweenRequests(t *testing.T) {
	// A write deadline a handler sets is for its own request; left in place
	// it would fail every later answer on the connection.
	srv := &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/first" {
			// The answer is out; then its deadline lapses (as one set
			// for a stream does, a while after the stream ends).
			w.Header().Set("Content-Length", "2")
			_, _ = io.WriteString(w, "ok")
			rc := http.NewResponseController(w)
			_ = rc.Flush()
			_ = rc.SetWriteDeadline(time.Now().Add(-time.Second))
			return
		}
		_, _ = io.WriteString(w, "second")
	})}
	ts := startServer(t, srv)
	c, br := dial(t, ts.addr)
	send(t, c, "GET /first HTTP/1.1\r\nHost: test\r\n\r\n")
	if got := readBody(t, readResponse(t, br, http.MethodGet)); got != "ok" {
		t.Fatalf("first answer = %q", got)
	}
	send(t, c, "GET /second HTTP/1.1\r\nHost: test\r\n\r\n")
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("second request unanswered: %v", err)
	}
	if got := readBody(t, res); got != "second" {
		t.Errorf("second answer = %q", got)
	}
}

func TestServer_Hijack(t *testing.T) {
	hijackErr := make(chan error, 1)
	srv := &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/after-flush" {
			_, _ = io.WriteString(w, "streaming")
			w.(http.Flusher).Flush()
			_, _, err := http.NewResponseController(w).Hijack()
			hijackErr <- err
			return
		}
		nc, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			hijackErr <- err
			return
		}
		defer nc.Close()
		// What the client sent behind the head sits in the reader handed over.
		line, err := rw.ReadString('\n')
		if err != nil {
			hijackErr <- err
			return
		}
		_, _ = rw.WriteString("pong:" + line)
		hijackErr <- rw.Flush()
	})}
	ts := startServer(t, srv)

	t.Run("takes the connection over", func(t *testing.T) {
		c, br := dial(t, ts.addr)
		send(t, c, "GET /ws HTTP/1.1\r\nHost: test\r\n\r\nping\n")
		if err := recv(t, hijackErr); err != nil {
			t.Fatalf("handler: %v", err)
		}
		got, err := io.ReadAll(br)
		if err != nil || string(got) != "pong:ping\n" {
			t.Errorf("after hijack the client read %q, %v; want only pong:ping", got, err)
		}
	})
	t.Run("refused once the answer began", func(t *testing.T) {
		c, br := dial(t, ts.addr)
		send(t, c, "GET /after-flush HTTP/1.1\r\nHost: test\r\n\r\n")
		if err := recv(t, hijackErr); err == nil {
			t.Error("Hijack after Flush succeeded")
		}
		res := readResponse(t, br, http.MethodGet)
		if got := readBody(t, res); got != "streaming" {
			t.Errorf("answer = %q", got)
		}
	})
}

func TestServer_HijackedConnectionHasNoDeadline(t *testing.T) {
	// A hijacked connection (a ReverseProxy upgrade, a websocket) outlives
	// the request: no deadline of the server's or the handler's may stay.
	readErr := make(chan error, 1)
	srv := &h1.Server{ReadTimeout: time.Minute, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Deadlines already passed, as ReadTimeout's has on a connection
		// upgraded a while ago: they must not outlive the hijack.
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Now().Add(-time.Second))
		_ = rc.SetWriteDeadline(time.Now().Add(-time.Second))
		nc, rw, err := rc.Hijack()
		if err != nil {
			readErr <- err
			return
		}
		defer nc.Close()
		_, _ = rw.WriteString("ready\n")
		if err := rw.Flush(); err != nil {
			readErr <- err
			return
		}
		_, err = rw.ReadString('\n')
		readErr <- err
	})}
	ts := startServer(t, srv)
	c, br := dial(t, ts.addr)
	send(t, c, "GET /ws HTTP/1.1\r\nHost: test\r\n\r\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("read %q, %v; the write deadline outlived the hijack: %v", line, err, recv(t, readErr))
	}
	send(t, c, "ping\n")
	if err := recv(t, readErr); err != nil {
		t.Errorf("read on the hijacked connection = %v, want ping", err)
	}
}

func TestServer_WriteAfterHijackReturnsErrHijacked(t *testing.T) {
	// http.ErrHijacked is what ResponseWriter documents for this.
	writeErr := make(chan error, 1)
	srv := &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nc, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			writeErr <- err
			return
		}
		defer nc.Close()
		_, err = w.Write([]byte("x"))
		writeErr <- err
	})}
	ts := startServer(t, srv)
	c, _ := dial(t, ts.addr)
	send(t, c, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
	if err := recv(t, writeErr); !errors.Is(err, http.ErrHijacked) {
		t.Errorf("Write after Hijack = %v, want http.ErrHijacked", err)
	}
}

func TestServer_ShutdownClosesIdleAndWaitsForBusy(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	srv := &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(entered)
			<-release
		}
		_, _ = io.WriteString(w, "done")
	})}
	ts := startServer(t, srv)

	idle, idleBR := dial(t, ts.addr)
	send(t, idle, "GET /fast HTTP/1.1\r\nHost: test\r\n\r\n")
	if got := readBody(t, readResponse(t, idleBR, http.MethodGet)); got != "done" {
		t.Fatalf("answer = %q", got)
	}
	busy, busyBR := dial(t, ts.addr)
	send(t, busy, "GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
	recv(t, entered)

	shutdown := make(chan error, 1)
	go func() { shutdown <- srv.Shutdown(t.Context()) }()

	expectClosed(t, idleBR) // closed at once, while the other still works
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned %v while a handler was busy", err)
	default:
	}

	close(release)
	res := readResponse(t, busyBR, http.MethodGet)
	if got := readBody(t, res); got != "done" {
		t.Errorf("busy answer = %q", got)
	}
	if !res.Close {
		t.Error("the answer during shutdown lacks Connection: close")
	}
	expectClosed(t, busyBR)
	select {
	case err := <-shutdown:
		if err != nil {
			t.Errorf("Shutdown = %v", err)
		}
	case <-time.After(guard):
		t.Fatal("Shutdown did not return")
	}
	if err := ts.wait(t); !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve = %v, want http.ErrServerClosed", err)
	}
	if _, err := net.Dial("tcp", ts.addr); err == nil {
		t.Error("the listener still accepts")
	}
}

func TestServer_ShutdownClosesBusyConnectionsWhenContextEnds(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	srv := &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
	})}
	ts := startServer(t, srv)
	t.Cleanup(func() { close(release) })

	c, br := dial(t, ts.addr)
	send(t, c, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
	recv(t, entered)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown = %v, want context.Canceled", err)
	}
	expectClosed(t, br)
	if err := ts.wait(t); !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve = %v, want http.ErrServerClosed", err)
	}
}

func TestServer_ServeReturnsErrServerClosed(t *testing.T) {
	t.Run("after Close", func(t *testing.T) {
		srv := &h1.Server{Handler: http.NotFoundHandler()}
		ts := startServer(t, srv)
		if err := srv.Close(); err != nil {
			t.Fatal(err)
		}
		if err := ts.wait(t); !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve = %v", err)
		}
	})
	t.Run("after Shutdown", func(t *testing.T) {
		srv := &h1.Server{Handler: http.NotFoundHandler()}
		if err := srv.Shutdown(t.Context()); err != nil {
			t.Fatalf("Shutdown of an idle server = %v", err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve = %v", err)
		}
	})
}

func TestServer_Timeouts(t *testing.T) {
	const short = 200 * time.Millisecond
	readErr := make(chan error, 1)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != http.NoBody {
			_, err := io.ReadAll(r.Body)
			readErr <- err
			if err != nil {
				w.WriteHeader(http.StatusRequestTimeout)
				return
			}
		}
		_, _ = io.WriteString(w, "ok")
	})

	t.Run("ReadHeaderTimeout: nothing sent", func(t *testing.T) {
		ts := startServer(t, &h1.Server{ReadHeaderTimeout: short, Handler: handler})
		_, br := dial(t, ts.addr)
		expectClosed(t, br)
	})
	t.Run("ReadHeaderTimeout: head never ends", func(t *testing.T) {
		ts := startServer(t, &h1.Server{ReadHeaderTimeout: short, Handler: handler})
		c, br := dial(t, ts.addr)
		send(t, c, "GET / HTTP/1.1\r\nHost: test\r\n")
		expectClosed(t, br) // nobody to answer: no 400, just the close
	})
	t.Run("IdleTimeout", func(t *testing.T) {
		ts := startServer(t, &h1.Server{IdleTimeout: short, Handler: handler})
		c, br := dial(t, ts.addr)
		send(t, c, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
		if got := readBody(t, readResponse(t, br, http.MethodGet)); got != "ok" {
			t.Fatalf("answer = %q", got)
		}
		expectClosed(t, br)
	})
	t.Run("ReadTimeout: body never ends", func(t *testing.T) {
		ts := startServer(t, &h1.Server{ReadTimeout: short, Handler: handler})
		c, br := dial(t, ts.addr)
		send(t, c, "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\nabc")
		if err := recv(t, readErr); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("body read = %v, want os.ErrDeadlineExceeded", err)
		}
		if res := readResponse(t, br, http.MethodPost); res.StatusCode != http.StatusRequestTimeout {
			t.Errorf("status = %d", res.StatusCode)
		}
		expectClosed(t, br)
	})
}

func TestServer_ReadTimeoutBoundsTheHeadToo(t *testing.T) {
	// Without ReadHeaderTimeout, ReadTimeout bounds the head too, or half a
	// head would hold a connection forever.
	ts := startServer(t, &h1.Server{ReadTimeout: 200 * time.Millisecond, Handler: http.NotFoundHandler()})
	c, br := dial(t, ts.addr)
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	send(t, c, "GET / HTTP/1.1\r\nHost: test\r\n")
	expectClosed(t, br)
}

func TestServer_PanickingHandlerClosesTheConnection(t *testing.T) {
	tests := []struct {
		name    string
		value   any
		wantLog bool
	}{
		{"http.ErrAbortHandler is silent", http.ErrAbortHandler, false},
		{"any other panic is logged", "boom", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs lockedBuffer
			srv := &h1.Server{
				Logger: slog.New(slog.NewTextHandler(&logs, nil)),
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == "/panic" {
						_, _ = io.WriteString(w, "partial")
						panic(tt.value)
					}
					_, _ = io.WriteString(w, "fine")
				}),
			}
			ts := startServer(t, srv)
			c, br := dial(t, ts.addr)
			send(t, c, "GET /panic HTTP/1.1\r\nHost: test\r\n\r\n")
			expectClosed(t, br) // nothing of the buffered answer goes out

			logged := strings.Contains(logs.String(), "http handler panicked")
			if logged != tt.wantLog {
				t.Errorf("logged: %v, want %v; log: %s", logged, tt.wantLog, logs.String())
			}
			// The server goes on serving.
			c, br = dial(t, ts.addr)
			send(t, c, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
			if got := readBody(t, readResponse(t, br, http.MethodGet)); got != "fine" {
				t.Errorf("answer after the panic = %q", got)
			}
		})
	}
}

func TestServer_ClosesWhenAsked(t *testing.T) {
	srv := &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/handler-closes" {
			w.Header().Set("Connection", "close")
		}
		_, _ = io.WriteString(w, "bye")
	})}
	ts := startServer(t, srv)
	for _, request := range []string{
		"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
		"GET /handler-closes HTTP/1.1\r\nHost: test\r\n\r\n",
	} {
		c, br := dial(t, ts.addr)
		send(t, c, request)
		res := readResponse(t, br, http.MethodGet)
		if !res.Close || readBody(t, res) != "bye" {
			t.Errorf("%q: Close %v", request, res.Close)
		}
		expectClosed(t, br)
	}
}

func TestServer_DropsHeaderValuesThatWouldSplitTheAnswer(t *testing.T) {
	srv := &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Split", "a\r\nInjected: yes")
		w.Header().Set("X-Fine", "kept")
		_, _ = io.WriteString(w, "ok")
	})}
	ts := startServer(t, srv)
	c, br := dial(t, ts.addr)
	send(t, c, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
	res := readResponse(t, br, http.MethodGet)
	if res.Header.Get("Injected") != "" || res.Header.Get("X-Split") != "" {
		t.Errorf("a handler's value split the head: %v", res.Header)
	}
	if res.Header.Get("X-Fine") != "kept" || readBody(t, res) != "ok" {
		t.Errorf("answer damaged: %v", res.Header)
	}
}

func TestServer_FramesAnswerWhenHandlerSetsTransferEncoding(t *testing.T) {
	// The framing is the server's: a Transfer-Encoding the handler set must
	// not sit beside a Content-Length over a body that is not chunked.
	srv := &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Transfer-Encoding", "chunked")
		_, _ = io.WriteString(w, "ok")
	})}
	ts := startServer(t, srv)
	c, br := dial(t, ts.addr)
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second)) // the body may never parse
	send(t, c, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
	res := readResponse(t, br, http.MethodGet)
	got, err := io.ReadAll(res.Body)
	if err != nil || string(got) != "ok" {
		t.Errorf("body %q, %v; want ok", got, err)
	}
}

func TestServer_SniffsContentTypeOfALongFirstWrite(t *testing.T) {
	// As ResponseWriter documents: the first 512 bytes written, even when
	// the first Write is longer than the buffer (ReverseProxy writes 32 KiB).
	page := "<html><body>" + strings.Repeat("x", 10000) + "</body></html>"
	srv := &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, page)
	})}
	ts := startServer(t, srv)
	c, br := dial(t, ts.addr)
	send(t, c, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
	res := readResponse(t, br, http.MethodGet)
	if got := res.Header.Get("Content-Type"); got != "text/html; charset=utf-8" {
		t.Errorf("Content-Type = %q, want text/html; charset=utf-8", got)
	}
}

func TestServer_SniffsContentTypeOfShortAnswers(t *testing.T) {
	srv := &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "<html><body>hi</body></html>")
	})}
	ts := startServer(t, srv)
	c, br := dial(t, ts.addr)
	send(t, c, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
	res := readResponse(t, br, http.MethodGet)
	if got := res.Header.Get("Content-Type"); got != "text/html; charset=utf-8" {
		t.Errorf("Content-Type = %q", got)
	}
	if res.Header.Get("Date") == "" {
		t.Error("no Date header")
	}
}

func TestServer_KeepsConnectionsWithNetHTTPClient(t *testing.T) {
	var ts *testServer
	srv := &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		if local == nil || local.String() != ts.addr {
			http.Error(w, fmt.Sprintf("LocalAddrContextKey = %v", local), http.StatusInternalServerError)
			return
		}
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("X-Remote", r.RemoteAddr)
		_, _ = fmt.Fprintf(w, "%s %s %d", r.Method, r.URL.Path, len(b))
	})}
	ts = startServer(t, srv)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}

	var remote string
	for i := range 12 {
		size := []int{0, 10, 5000, 300 << 10}[i%4]
		method := http.MethodGet
		var body io.Reader
		if size > 0 {
			method = http.MethodPost
			body = bytes.NewReader(make([]byte, size))
		}
		req, err := http.NewRequestWithContext(t.Context(), method, "http://"+ts.addr+"/r"+strconv.Itoa(i), body)
		if err != nil {
			t.Fatal(err)
		}
		res, err := client.Do(req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		got := readBody(t, res)
		_ = res.Body.Close()
		if want := fmt.Sprintf("%s /r%d %d", method, i, size); res.StatusCode != 200 || got != want {
			t.Errorf("request %d: %d %q, want %q", i, res.StatusCode, got, want)
		}
		if i == 0 {
			remote = res.Header.Get("X-Remote")
		} else if r := res.Header.Get("X-Remote"); r != remote {
			t.Errorf("request %d came from %s, the first from %s", i, r, remote)
		}
	}
	if n := ts.ln.n.Load(); n != 1 {
		t.Errorf("accepted %d connections for 12 sequential requests, want 1", n)
	}
}

func TestServer_ShutdownServesTheFirstRequestOfANewConnection(t *testing.T) {
	// A connection accepted just before a shutdown may carry a request on
	// its way: closing it as idle would reset that request.
	srv := &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "done")
	})}
	ts := startServer(t, srv)
	fresh, freshBR := dial(t, ts.addr)
	_, _ = dial(t, ts.addr)
	// Serve registers a connection before it accepts the next one: with two
	// accepted, the first is known to the server.
	deadline := time.Now().Add(guard)
	for ts.ln.n.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the server did not accept the connections")
		}
		time.Sleep(time.Millisecond)
	}

	shutdown := make(chan error, 1)
	go func() { shutdown <- srv.Shutdown(context.Background()) }()
	send(t, fresh, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
	res := readResponse(t, freshBR, http.MethodGet)
	if got := readBody(t, res); res.StatusCode != http.StatusOK || got != "done" {
		t.Fatalf("answer %d %q, want 200 done", res.StatusCode, got)
	}
	if !res.Close {
		t.Error("an answer during shutdown lacks Connection: close")
	}
	expectClosed(t, freshBR)
	// The other new connection never sends anything; Shutdown closes it
	// once its grace has passed.
	if err := recv(t, shutdown); err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
}

func TestServer_SendsHeldAnswersWhenThePipelinedRequestNeverCompletes(t *testing.T) {
	srv := &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "answer to "+r.URL.Path)
	})}
	ts := startServer(t, srv)
	c, br := dial(t, ts.addr)
	// A whole request, then the start of another, then the client stops
	// sending: the first answer must not wait for a head that never ends.
	send(t, c, "GET /a HTTP/1.1\r\nHost: test\r\n\r\nGET /b HTTP/1.1\r\nHo")
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if got := readBody(t, readResponse(t, br, http.MethodGet)); got != "answer to /a" {
		t.Fatalf("answer %q, want the one to /a", got)
	}
}

// contextEnd waits for the request's context to end and says why; an error
// of its own if it never does.
func contextEnd(r *http.Request) error {
	select {
	case <-r.Context().Done():
		return r.Context().Err()
	case <-time.After(guard):
		return errors.New("request context never ended")
	}
}

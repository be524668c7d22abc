// Package h1 is the gateway's HTTP/1.1 code: Transport, the client of its
// upstream calls, and Server, its listener (ADR 0005).
//
// Transport keeps a pool of keep-alive connections, each carrying one
// request at a time, written and read on the caller's goroutine. net/http's
// Transport hands every request to a writer goroutine and every response to
// a reader goroutine of its connection; on a proxy's hot path those
// handoffs cost more than the proxying itself: on a 2-core machine a
// ReverseProxy over this transport serves about twice the requests of one
// over http.Transport (bench/README.md). What this transport leaves out, it
// hands to a fallback http.Transport: TLS, protocol upgrades, request
// trailers, and bodies declared over 64 KiB.
package h1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
)

// probeAfter is how long a pooled connection may sit idle before it is
// probed (alive) even for a request that could be sent again.
const probeAfter = time.Second

// maxInterim bounds the 1xx answers skipped before the final one.
const maxInterim = 5

// smallBody is the largest declared request body this transport sends
// itself. The body is written whole before the answer is read, and a body
// this small fits in the socket's buffers, so an upstream that answers
// before reading it (401, 413) is heard. A larger one goes through the
// fallback, which reads while it writes. (The gateway knows the length of
// every body it forwards.)
const smallBody = 64 << 10

func largeBody(req *http.Request) bool {
	return req.ContentLength > smallBody
}

// Defaults of a Transport's zero fields.
const (
	// DefaultIdleTimeout is below the 120 s after which mercato's servers
	// close an idle connection, so the pool rarely holds one the server has
	// closed.
	DefaultIdleTimeout    = 60 * time.Second
	DefaultMaxIdlePerHost = 128
	DefaultDialTimeout    = 5 * time.Second
)

// Transport is an http.RoundTripper for plain HTTP/1.1. Its zero value is
// not usable; build one with New.
type Transport struct {
	// Fallback carries what this transport does not: https, upgrades and
	// requests with trailers.
	Fallback http.RoundTripper
	// IdleTimeout closes connections idle for longer than this.
	IdleTimeout time.Duration
	// MaxIdlePerHost bounds the idle connections kept to one address.
	MaxIdlePerHost int
	dialer         net.Dialer

	mu    sync.Mutex
	hosts map[string]*hostPool
	swept time.Time // when idle connections were last swept
}

// New returns a transport with the default limits, handing what it does
// not carry to fallback.
func New(fallback http.RoundTripper) *Transport {
	return &Transport{
		Fallback:       fallback,
		IdleTimeout:    DefaultIdleTimeout,
		MaxIdlePerHost: DefaultMaxIdlePerHost,
		dialer:         net.Dialer{Timeout: DefaultDialTimeout, KeepAlive: 30 * time.Second},
		hosts:          map[string]*hostPool{},
	}
}

type hostPool struct {
	mu   sync.Mutex
	idle []*conn // most recently used last
}

type conn struct {
	nc   net.Conn
	raw  syscall.RawConn // nil where there is none
	br   *bufio.Reader
	bw   *bufio.Writer
	addr string
	used time.Time // when it last went idle
}

// errStale is a pooled connection the server had closed before the request
// reached it.
var errStale = errors.New("h1: pooled connection closed by the server")

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "http" || len(req.Trailer) > 0 || req.Header.Get("Upgrade") != "" || largeBody(req) {
		return t.Fallback.RoundTrip(req)
	}
	if err := validate(req); err != nil {
		closeBody(req)
		return nil, err
	}
	ctx := req.Context()
	replayable := isReplayable(req)
	for {
		c, reused, err := t.get(ctx, req.URL.Host)
		if err != nil {
			closeBody(req)
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			// Gone before it was sent: the cancellation would only reach
			// the connection once the request had.
			t.put(c)
			closeBody(req)
			return nil, err
		}
		if reused && (!replayable || time.Since(c.used) > probeAfter) && !alive(c.raw) {
			// A request that cannot go twice goes only on a connection
			// seen open: one probe, not a retry after the fact. One that
			// sat idle a while is probed too, for anything the server
			// sent meanwhile (a close, an unasked answer).
			_ = c.nc.Close()
			continue
		}
		res, err := c.roundTrip(ctx, req, t)
		if errors.Is(err, errStale) && reused && replayable && ctx.Err() == nil {
			// Nothing reached the server; as http.Transport does, try again,
			// on another connection.
			continue
		}
		if err != nil {
			closeBody(req)
			return nil, err
		}
		return res, nil
	}
}

// CloseIdleConnections closes the idle connections of every host.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	hosts := make([]*hostPool, 0, len(t.hosts))
	for _, h := range t.hosts {
		hosts = append(hosts, h)
	}
	t.mu.Unlock()
	for _, h := range hosts {
		h.mu.Lock()
		idle := h.idle
		h.idle = nil
		h.mu.Unlock()
		for _, c := range idle {
			_ = c.nc.Close()
		}
	}
	if f, ok := t.Fallback.(interface{ CloseIdleConnections() }); ok {
		f.CloseIdleConnections()
	}
}

// get returns an idle connection to addr, or dials one.
func (t *Transport) get(ctx context.Context, addr string) (c *conn, reused bool, err error) {
	now := time.Now()
	t.mu.Lock()
	if now.Sub(t.swept) > t.IdleTimeout/2 {
		t.sweepLocked(now)
	}
	h := t.hosts[addr]
	if h == nil {
		h = &hostPool{}
		t.hosts[addr] = h
	}
	t.mu.Unlock()

	h.mu.Lock()
	for len(h.idle) > 0 {
		c = h.idle[len(h.idle)-1]
		h.idle = h.idle[:len(h.idle)-1]
		if now.Sub(c.used) < t.IdleTimeout {
			h.mu.Unlock()
			return c, true, nil
		}
		_ = c.nc.Close()
	}
	h.mu.Unlock()

	nc, err := t.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, false, fmt.Errorf("dial %s: %w", addr, err)
	}
	return &conn{nc: nc, raw: rawConn(nc), br: bufio.NewReaderSize(nc, 4<<10), bw: bufio.NewWriterSize(nc, 4<<10), addr: addr}, false, nil
}

// sweepLocked closes the connections idle for too long, and forgets the
// addresses left without any: instances come and go, and nothing else
// would close what was pooled for one that went.
func (t *Transport) sweepLocked(now time.Time) {
	t.swept = now
	for addr, h := range t.hosts {
		h.mu.Lock()
		kept := h.idle[:0]
		for _, c := range h.idle {
			if now.Sub(c.used) < t.IdleTimeout {
				kept = append(kept, c)
			} else {
				_ = c.nc.Close()
			}
		}
		clear(h.idle[len(kept):])
		h.idle = kept
		empty := len(kept) == 0
		h.mu.Unlock()
		if empty {
			delete(t.hosts, addr)
		}
	}
}

// put returns c to its pool, or closes it when the pool is full.
func (t *Transport) put(c *conn) {
	c.used = time.Now()
	// Looked up again: a sweep may have dropped the pool it came from.
	t.mu.Lock()
	h := t.hosts[c.addr]
	if h == nil {
		h = &hostPool{}
		t.hosts[c.addr] = h
	}
	h.mu.Lock()
	t.mu.Unlock() // after h's lock, so that no sweep drops h in between
	if len(h.idle) < t.MaxIdlePerHost {
		h.idle = append(h.idle, c)
		h.mu.Unlock()
		return
	}
	h.mu.Unlock()
	_ = c.nc.Close()
}

// aLongTimeAgo is a deadline that fails pending and future reads and writes.
var aLongTimeAgo = time.Unix(1, 0)

// roundTrip writes req on c and reads the head of its response. The body
// is read on the caller's goroutine too; reading it to the end returns c to
// the pool.
func (c *conn) roundTrip(ctx context.Context, req *http.Request, t *Transport) (*http.Response, error) {
	// A cancelled request unblocks its reads and writes through a deadline;
	// the connection is then closed, never pooled.
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(aLongTimeAgo) })
	fail := func(err error) (*http.Response, error) {
		stop()
		_ = c.nc.Close()
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("%w (%w)", ctxErr, err)
		}
		return nil, err
	}
	if err := c.write(req); err != nil {
		return fail(err)
	}
	// A server that closed the connection while it sat idle shows it now, by
	// closing before the first byte of an answer.
	if _, err := c.br.Peek(1); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			return fail(fmt.Errorf("%w: %w", errStale, err))
		}
		return fail(fmt.Errorf("read response: %w", err))
	}
	for interim := 0; ; interim++ {
		res, err := http.ReadResponse(c.br, req)
		if err != nil {
			return fail(fmt.Errorf("read response: %w", err))
		}
		if res.StatusCode >= 100 && res.StatusCode < 200 {
			if res.StatusCode == http.StatusSwitchingProtocols {
				return fail(errors.New("h1: unexpected 101 Switching Protocols"))
			}
			if interim == maxInterim {
				return fail(errors.New("h1: too many 1xx answers"))
			}
			continue // an interim answer, such as 100 Continue
		}
		b := &body{rc: res.Body, c: c, t: t, ctx: ctx, stop: stop, keep: !res.Close && !req.Close}
		if res.Body == http.NoBody {
			b.release(true)
			return res, nil
		}
		res.Body = b
		return res, nil
	}
}

// write sends req's head and body and flushes them: one write for a request
// without a body.
func (c *conn) write(req *http.Request) error {
	bw := c.bw
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	bw.WriteString(req.Method)
	bw.WriteByte(' ')
	bw.WriteString(req.URL.RequestURI())
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	for k, vs := range req.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Trailer", "Connection":
			continue
		}
		for _, v := range vs {
			if k == "User-Agent" && v == "" {
				continue // as http.Transport: an empty User-Agent sends none
			}
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	if req.Close {
		bw.WriteString("Connection: close\r\n")
	}
	hasBody := req.Body != nil && req.Body != http.NoBody
	chunked := hasBody && req.ContentLength <= 0
	switch {
	case chunked:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	case hasBody:
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.FormatInt(req.ContentLength, 10))
		bw.WriteString("\r\n")
	case req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch:
		bw.WriteString("Content-Length: 0\r\n")
	}
	bw.WriteString("\r\n")
	if hasBody {
		err := writeBody(bw, req.Body, req.ContentLength, chunked)
		_ = req.Body.Close()
		if err != nil {
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("%w: write request: %w", errStale, err)
	}
	return nil
}

func writeBody(bw *bufio.Writer, body io.Reader, length int64, chunked bool) error {
	if chunked {
		cw := httputil.NewChunkedWriter(bw)
		if _, err := io.Copy(cw, body); err != nil {
			return fmt.Errorf("write request body: %w", err)
		}
		if err := cw.Close(); err != nil {
			return fmt.Errorf("write request body: %w", err)
		}
		_, err := bw.WriteString("\r\n") // no trailers
		return err
	}
	n, err := io.Copy(bw, io.LimitReader(body, length))
	if err != nil {
		return fmt.Errorf("write request body: %w", err)
	}
	if n != length {
		return fmt.Errorf("write request body: %d bytes of a declared %d", n, length)
	}
	return nil
}

// body is a response body whose connection goes back to the pool once it
// has been read to the end.
type body struct {
	rc   io.ReadCloser
	c    *conn
	t    *Transport
	ctx  context.Context
	stop func() bool
	keep bool // the connection may carry another request
	done bool
}

func (b *body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if errors.Is(err, io.EOF) {
		b.release(true)
	} else if err != nil {
		b.release(false)
		if ctxErr := b.ctx.Err(); ctxErr != nil {
			// The deadline was the cancellation's doing; say so, as
			// http.Transport does (ReverseProxy is quiet about
			// context.Canceled only).
			err = ctxErr
		}
	}
	return n, err
}

// Close closes the connection unless the body was read to its end: what is
// left of it could be anything.
func (b *body) Close() error {
	b.release(false)
	return nil
}

func (b *body) release(complete bool) {
	if b.done {
		return
	}
	b.done = true
	// stop reports false once the context's cancellation has set a deadline.
	// Bytes past the answer's end belong to no request: such a connection
	// would hand them to the next one as its answer.
	if complete && b.keep && b.c.br.Buffered() == 0 && b.stop() {
		b.t.put(b.c)
		return
	}
	b.stop()
	_ = b.c.nc.Close()
}

func validate(req *http.Request) error {
	if req.URL.Host == "" {
		return errors.New("h1: request has no host")
	}
	if !validMethod(req.Method) {
		return fmt.Errorf("h1: invalid method %q", req.Method)
	}
	for k, vs := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("h1: invalid header name %q", k)
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("h1: invalid value for header %q", k)
			}
		}
	}
	if !httpguts.ValidHostHeader(req.Host) {
		return fmt.Errorf("h1: invalid Host %q", req.Host)
	}
	return nil
}

func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		if !httpguts.IsTokenRune(rune(m[i])) {
			return false
		}
	}
	return true
}

// isReplayable is http.Transport's rule, for requests without a body: one
// may go again if it is idempotent, or says it may be repeated.
func isReplayable(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody {
		return false
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, a := req.Header["Idempotency-Key"]
	_, b := req.Header["X-Idempotency-Key"]
	return a || b
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// Buffers is an httputil.BufferPool of 32 KiB buffers. Without one, a
// ReverseProxy allocates a buffer of that size for every response it copies.
type Buffers struct{ pool sync.Pool }

// Get implements httputil.BufferPool.
func (b *Buffers) Get() []byte {
	if p, ok := b.pool.Get().(*[]byte); ok {
		return *p
	}
	return make([]byte, 32<<10)
}

// Put implements httputil.BufferPool.
func (b *Buffers) Put(buf []byte) { b.pool.Put(&buf) }

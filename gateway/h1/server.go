package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Server serves HTTP/1.1 with an http.Handler, each connection on one
// goroutine that reads a request, runs the handler and writes the answer.
//
// net/http's server also starts a reader goroutine per request, to learn
// that a client went away, and stops it again before the next one: on a
// proxy's hot path, a cost of the size of the proxying. This server starts
// that reader only for a request still running after watchAfter, or one
// whose answer streams, which are the requests where a client that left
// leaves work behind. What it does not speak: TLS and HTTP/2.
type Server struct {
	Handler http.Handler
	// ReadHeaderTimeout bounds the arrival of a request's head (zero:
	// ReadTimeout's bound), ReadTimeout the head and body together,
	// IdleTimeout the wait for the next request on a kept-alive connection
	// (zero: the head's bound); zero throughout is no bound.
	// http.ResponseController's SetReadDeadline moves a request's bound.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	IdleTimeout       time.Duration
	// MaxHeaderBytes bounds a request's head; default
	// http.DefaultMaxHeaderBytes. A longer head gets 431.
	MaxHeaderBytes int
	Logger         *slog.Logger

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*serverConn]struct{}
	closing   atomic.Bool
	done      chan struct{} // closed when the last connection ends during shutdown
	date      atomic.Pointer[date]
}

// date is a Date header value, made once a second rather than per answer.
type date struct {
	unix  int64
	value []string
}

func (s *Server) dateHeader() []string {
	now := time.Now()
	if d := s.date.Load(); d != nil && d.unix == now.Unix() {
		return d.value
	}
	d := &date{unix: now.Unix(), value: []string{now.UTC().Format(http.TimeFormat)}}
	s.date.Store(d)
	return d.value
}

// maxDrain is how much of a body a handler left unread the server reads
// away to keep the connection (net/http's bound too); beyond it, the
// connection closes after the answer.
const maxDrain = 256 << 10

// Serve accepts connections on ln until Shutdown or Close, and returns
// http.ErrServerClosed then.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		_ = ln.Close()
		return http.ErrServerClosed
	}
	if s.listeners == nil {
		s.listeners = map[net.Listener]struct{}{}
		s.conns = map[*serverConn]struct{}{}
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()

	base := context.WithValue(context.Background(), http.LocalAddrContextKey, ln.Addr())
	// httputil.ReverseProxy aborts an answer whose upstream body breaks off
	// (panic(http.ErrAbortHandler), so the client sees it broken) only
	// under a server it recognises by this key; elsewhere it would end the
	// answer as if whole, and a cache would keep it.
	base = context.WithValue(base, http.ServerContextKey, &http.Server{})
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return http.ErrServerClosed
			}
			if retryable(err) {
				// Out of file descriptors and the like: wait, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.logger().Warn("accept failed; retrying", "err", err, "in", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		backoff = 0
		c := s.newConn(nc)
		if c == nil {
			_ = nc.Close()
			return http.ErrServerClosed
		}
		go c.serve(base)
	}
}

// retryable tells an accept error that passes (out of file descriptors, a
// connection reset before it was accepted) from one that ends Serve:
// net/http's rule.
func retryable(err error) bool {
	var t interface{ Temporary() bool }
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.As(err, &t) && t.Temporary()
}

// Shutdown stops accepting, closes idle connections and waits for the
// others to finish their request, until ctx ends; then it closes them.
func (s *Server) Shutdown(ctx context.Context) error {
	done := s.stop()
	s.closeIdle()
	// Connections busy now go idle later; each closes itself then, but
	// one that was between states when closeIdle ran is caught here.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return nil
		case <-tick.C:
			s.closeIdle()
		case <-ctx.Done():
			_ = s.Close()
			return ctx.Err()
		}
	}
}

// Close stops accepting and closes every connection at once.
func (s *Server) Close() error {
	s.stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		_ = c.nc.Close()
	}
	return nil
}

// stop closes the listeners; the returned channel closes once no
// connection is left.
func (s *Server) stop() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done == nil {
		s.done = make(chan struct{})
	}
	s.closing.Store(true)
	for ln := range s.listeners {
		_ = ln.Close()
	}
	if len(s.conns) == 0 {
		select {
		case <-s.done:
		default:
			close(s.done)
		}
	}
	return s.done
}

func (s *Server) closeIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.closeIfIdle()
	}
}

func (s *Server) newConn(nc net.Conn) *serverConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return nil
	}
	c := &serverConn{s: s, nc: nc, born: time.Now(), remote: nc.RemoteAddr().String(), limit: &limitReader{r: nc, n: -1}}
	s.conns[c] = struct{}{}
	return c
}

func (s *Server) forget(c *serverConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	if s.closing.Load() && len(s.conns) == 0 && s.done != nil {
		select {
		case <-s.done:
		default:
			close(s.done)
		}
	}
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// headerTimeout is ReadHeaderTimeout, or ReadTimeout without one.
func (s *Server) headerTimeout() time.Duration {
	if s.ReadHeaderTimeout > 0 {
		return s.ReadHeaderTimeout
	}
	return s.ReadTimeout
}

func (s *Server) maxHeaderBytes() int64 {
	if s.MaxHeaderBytes > 0 {
		return int64(s.MaxHeaderBytes)
	}
	return http.DefaultMaxHeaderBytes
}

// serverConn is one client connection.
type serverConn struct {
	s      *Server
	nc     net.Conn
	remote string
	limit  *limitReader
	br     *bufio.Reader
	bw     *bufio.Writer

	mu     sync.Mutex
	idle   bool      // waiting for a request
	closed bool      // closed by the server while idle
	served bool      // has answered a request
	born   time.Time // when it was accepted
}

// newGrace is how long a connection that has not sent its first request
// yet counts as busy for Shutdown: its request may be on the way, and
// closing would reset it (net/http's rule too).
const newGrace = 5 * time.Second

// closable reports whether c may be closed as idle; c.mu is held.
func (c *serverConn) closable() bool {
	return c.idle && !c.closed && (c.served || time.Since(c.born) > newGrace)
}

// closeIfIdle closes c if it waits between requests.
func (c *serverConn) closeIfIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closable() {
		c.closed = true
		_ = c.nc.Close()
	}
}

// setIdle marks c idle or busy; false means the server closed it.
func (c *serverConn) setIdle(idle bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.idle = idle
	if idle && c.s.closing.Load() && c.closable() {
		c.closed = true
		return false // the connection closes on its way out
	}
	return true
}

func (c *serverConn) serve(base context.Context) {
	hijacked := false
	defer func() {
		if v := recover(); v != nil && v != http.ErrAbortHandler {
			c.s.logger().Error("http handler panicked", "remote", c.remote, "panic", v)
		}
		if !hijacked {
			if c.bw != nil && c.bw.Buffered() > 0 {
				// Answers held back for a pipelined request that never came
				// whole; bounded, for a client that does not read.
				_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
				_ = c.bw.Flush()
			}
			_ = c.nc.Close()
		}
		c.s.forget(c)
	}()
	c.br = bufio.NewReaderSize(c.limit, 4<<10)
	c.bw = bufio.NewWriterSize(c.nc, 4<<10)
	ctx, cancel := context.WithCancel(base)
	defer cancel()
	var pending []byte // an answer's buffer, reused by the next
	first := true
	for {
		if !c.setIdle(true) {
			return
		}
		wait := c.s.IdleTimeout
		if first || wait == 0 {
			wait = c.s.headerTimeout()
		}
		c.deadline(wait)
		if _, err := c.br.Peek(1); err != nil {
			return // gone, idle too long, or closed by Shutdown
		}
		if !c.setIdle(false) {
			return
		}
		first = false
		start := time.Now()
		// A deadline costs timer work; a head already here whole needs none.
		if !headBuffered(c.br) {
			c.deadline(c.s.headerTimeout())
		}
		c.limit.n = c.s.maxHeaderBytes() + 4<<10 // the bufio buffer reads ahead
		req, err := http.ReadRequest(c.br)
		tooLarge := c.limit.hit
		c.limit.n, c.limit.hit = -1, false
		if err != nil {
			c.refuse(err, tooLarge)
			return
		}
		if problem := validate400(req); problem != "" {
			c.refuseStatus(http.StatusBadRequest, problem)
			return
		}
		if req.Body != http.NoBody {
			if c.s.ReadTimeout > 0 {
				_ = c.nc.SetReadDeadline(start.Add(c.s.ReadTimeout))
			} else {
				_ = c.nc.SetReadDeadline(time.Time{})
			}
		}
		req.RemoteAddr = c.remote
		rctx, rcancel := context.WithCancel(ctx)
		w := &response{c: c, req: req, cancel: rcancel, header: make(http.Header, 8), declared: -1, pending: pending[:0]}
		body := &requestBody{rc: req.Body, w: w}
		if req.Body != http.NoBody {
			w.body = body
			if expect := req.Header.Get("Expect"); expect != "" {
				if !req.ProtoAtLeast(1, 1) || !httpguts.HeaderValuesContainsToken(req.Header["Expect"], "100-continue") {
					rcancel()
					c.refuseStatus(http.StatusExpectationFailed, "unsupported Expect header")
					return
				}
				body.owed.Store(true)
			}
			req.Body = body
		}
		req.Header.Del("Expect")
		if req.Body == http.NoBody {
			w.armWatch(watchAfter)
		}
		c.s.Handler.ServeHTTP(w, req.WithContext(rctx))
		if w.hijacked {
			hijacked = true
			rcancel()
			return
		}
		w.stopWatch()
		rcancel()
		c.mu.Lock()
		c.served = true
		c.mu.Unlock()
		keep := w.finish() && !req.Close
		pending = w.pending
		unread := false
		if req.Body != http.NoBody {
			// An answer that streamed went out before settleBody could
			// decide; this reads what the handler left, within a bound,
			// and ends reads of the body still running elsewhere.
			unread = !body.finish(maxDrain)
			keep = keep && !unread
		}
		if !keep {
			if c.bw.Flush() == nil && unread {
				c.lingerClose()
			}
			return
		}
		// Answers to pipelined requests go out together, as long as the
		// next one's head is here whole.
		if !headBuffered(c.br) {
			if err := c.bw.Flush(); err != nil {
				return
			}
		}
		if w.deadlines {
			_ = c.nc.SetWriteDeadline(time.Time{}) // the handler's, for its request only
		}
	}
}

// lingerClose ends a connection whose client may still be sending a body
// nobody reads: closing at once would reset the connection and could
// destroy the answer before the client reads it. As net/http does, it
// closes the sending side first and gives the client a moment.
func (c *serverConn) lingerClose() {
	if tc, ok := c.nc.(interface{ CloseWrite() error }); ok {
		if tc.CloseWrite() == nil {
			_ = c.nc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			_, _ = io.Copy(io.Discard, c.nc)
		}
	}
}

// headBuffered reports whether br holds a whole request head, so that
// reading it cannot block.
func headBuffered(br *bufio.Reader) bool {
	b, _ := br.Peek(br.Buffered())
	return bytes.Contains(b, []byte("\r\n\r\n"))
}

// deadline sets the read deadline d from now; zero lifts it.
func (c *serverConn) deadline(d time.Duration) {
	if d > 0 {
		_ = c.nc.SetReadDeadline(time.Now().Add(d))
	} else {
		_ = c.nc.SetReadDeadline(time.Time{})
	}
}

// refuse answers a request that could not be read, if it can still be
// answered, and leaves the connection to close.
func (c *serverConn) refuse(err error, tooLarge bool) {
	var ne net.Error
	switch {
	case tooLarge:
		c.refuseStatus(http.StatusRequestHeaderFieldsTooLarge, "the request's head is too large")
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.As(err, &ne):
		// The client went away or was too slow: nobody to answer.
	default:
		c.refuseStatus(http.StatusBadRequest, "malformed request")
	}
}

// refuseStatus writes a problem and closes the connection behind it.
func (c *serverConn) refuseStatus(code int, detail string) {
	body := fmt.Sprintf(`{"type":"about:blank","title":%q,"status":%d,"detail":%q}`, http.StatusText(code), code, detail)
	_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(c.bw, "HTTP/1.1 %d %s\r\nContent-Type: application/problem+json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		code, http.StatusText(code), len(body), body)
	if c.bw.Flush() == nil {
		c.lingerClose()
	}
}

// validate400 is net/http's server's checks after parsing: what makes a
// request bad beyond its syntax. (http.ReadRequest has moved the Host
// header to req.Host, keeping the first of several.)
func validate400(req *http.Request) string {
	switch {
	case req.ProtoMajor != 1:
		return "unsupported protocol version"
	case req.Method == "PRI":
		return "HTTP/2 is not served here"
	case req.ProtoAtLeast(1, 1) && req.Host == "" && req.Method != http.MethodConnect:
		return "missing Host header"
	case !httpguts.ValidHostHeader(req.Host):
		return "malformed Host header"
	}
	for k, vs := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return "invalid header name"
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return "invalid header value"
			}
		}
	}
	return ""
}

// limitReader fails reads once n bytes have been read; n < 0 is no limit.
type limitReader struct {
	r   io.Reader
	n   int64
	hit bool
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n < 0 {
		return l.r.Read(p)
	}
	if l.n == 0 {
		l.hit = true
		return 0, io.EOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// requestBody tells the server whether the handler read the body to its
// end, sends 100 Continue on the first read when the client waits for it,
// and leaves draining to the server (within maxDrain) when closed early.
// Its reads may come from another goroutine than the handler's (a
// transport writing the body upstream), and may outlive the handler: the
// server's finish ends them.
type requestBody struct {
	rc  io.ReadCloser
	w   *response
	eof atomic.Bool // read to its end
	// owed: the client waits for 100 Continue before it sends the body.
	owed atomic.Bool

	mu     sync.Mutex // serialises reads, Close and finish
	closed bool
	done   bool // finished by the server
	whole  bool // what finish found
}

func (b *requestBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	if b.eof.Load() {
		return 0, io.EOF
	}
	if b.owed.Swap(false) && !b.w.chosen.Load() {
		bw := b.w.c.bw
		_, _ = bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		if err := bw.Flush(); err != nil {
			return 0, err
		}
	}
	n, err := b.rc.Read(p)
	if errors.Is(err, io.EOF) && !b.eof.Swap(true) {
		b.w.armWatch(watchAfter) // the connection is free to watch now
	}
	return n, err
}

func (b *requestBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	return nil
}

// finish closes the body to its readers and reads what they left, up to
// max bytes; whole reports that the body ended within them, so that the
// connection can carry another request. A body still owed 100 Continue was
// never sent, and is not waited for.
func (b *requestBody) finish(max int64) (whole bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return b.whole
	}
	b.done, b.closed = true, true
	switch {
	case b.eof.Load():
		b.whole = true
	case b.owed.Load():
		b.whole = false
	default:
		n, err := io.CopyN(io.Discard, b.rc, max+1)
		b.whole = errors.Is(err, io.EOF) && n <= max
		b.eof.Store(b.whole)
	}
	return b.whole
}

// bodyBuffer is how much of an answer waits for the handler to end, so
// that a short answer goes out whole with its Content-Length.
const bodyBuffer = 4 << 10

// response is the http.ResponseWriter of one request.
type response struct {
	c           *serverConn
	req         *http.Request
	cancel      context.CancelFunc
	header      http.Header
	status      int
	wroteHeader bool        // the handler has chosen the status
	chosen      atomic.Bool // wroteHeader, for a body read elsewhere
	sentHeader  bool        // the head is on its way to the client
	chunked     bool
	declared    int64 // Content-Length the handler set, -1 for none
	written     int64
	pending     []byte
	noBody      bool
	failed      error
	hijacked    bool
	gone        atomic.Bool  // the watcher saw the client leave
	body        *requestBody // nil for a request without one
	deadlines   bool         // the handler moved the write deadline

	watchMu    sync.Mutex
	watchState int
	watchTimer *time.Timer
	watchDone  chan struct{} // closed when a running watcher has stopped
}

// Header implements http.ResponseWriter.
func (w *response) Header() http.Header { return w.header }

// WriteHeader implements http.ResponseWriter.
func (w *response) WriteHeader(code int) {
	if w.wroteHeader || w.hijacked {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		w.informational(code)
		return
	}
	w.wroteHeader = true
	w.chosen.Store(true)
	w.status = code
	if cl := w.header.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			w.declared = n
		} else {
			w.header.Del("Content-Length")
		}
	}
	w.noBody = w.req.Method == http.MethodHead || !bodyAllowed(code)
}

// informational sends a 1xx answer ahead of the final one.
func (w *response) informational(code int) {
	bw := w.c.bw
	_, _ = bw.WriteString("HTTP/1.1 " + strconv.Itoa(code) + " " + http.StatusText(code) + "\r\n")
	_ = w.header.Write(bw)
	_, _ = bw.WriteString("\r\n")
	_ = bw.Flush()
}

func bodyAllowed(code int) bool {
	return code >= 200 && code != http.StatusNoContent && code != http.StatusNotModified
}

// Write implements http.ResponseWriter.
func (w *response) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.failed != nil {
		return 0, w.failed
	}
	if w.noBody {
		if w.req.Method == http.MethodHead {
			w.written += int64(len(p))
			return len(p), nil // counted, for the Content-Length of a short answer
		}
		return 0, http.ErrBodyNotAllowed
	}
	if w.declared >= 0 && w.written+int64(len(p)) > w.declared {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if !w.sentHeader && len(w.pending)+len(p) <= bodyBuffer {
		w.pending = append(w.pending, p...)
		return len(p), nil
	}
	if !w.sentHeader {
		w.sniff(p)
		w.sendHeader(false)
	}
	if err := w.writeBody(p); err != nil {
		w.failed = err
		return 0, err
	}
	return len(p), nil
}

// sniff sets the Content-Type of an answer that goes out before the
// handler ends, from its first 512 bytes (pending, then p), when the
// handler set none.
func (w *response) sniff(p []byte) {
	h := w.header
	if _, ok := h["Content-Type"]; ok || w.noBody || h.Get("Content-Encoding") != "" {
		return
	}
	var head [512]byte
	n := copy(head[:], w.pending)
	n += copy(head[n:], p)
	if n > 0 {
		h["Content-Type"] = []string{http.DetectContentType(head[:n])}
	}
}

// sendHeader writes the head; final tells whether the handler has ended,
// so that the length of the whole answer is known.
func (w *response) sendHeader(final bool) {
	w.sentHeader = true
	h := w.header
	if _, ok := h["Date"]; !ok {
		h["Date"] = w.c.s.dateHeader()
	}
	if !w.noBody || w.req.Method == http.MethodHead {
		if _, ok := h["Content-Type"]; !ok && len(w.pending) > 0 && h.Get("Content-Encoding") == "" {
			h["Content-Type"] = []string{http.DetectContentType(w.pending)}
		}
	}
	h.Del("Transfer-Encoding") // the framing is the server's to choose
	closeConn := w.req.Close || w.c.s.closing.Load() || httpguts.HeaderValuesContainsToken(h["Connection"], "close")
	switch {
	case !bodyAllowed(w.status):
		h.Del("Content-Length")
	case w.declared >= 0:
	case final && (w.req.Method != http.MethodHead || w.written > 0):
		h["Content-Length"] = []string{strconv.FormatInt(w.written, 10)}
	case w.req.Method == http.MethodHead:
	case w.req.ProtoAtLeast(1, 1):
		w.chunked = true
		h.Del("Content-Length")
		h["Transfer-Encoding"] = []string{"chunked"}
	default:
		closeConn = true // HTTP/1.0: the end of the connection ends the body
	}
	if w.body != nil && w.body.owed.Load() {
		// The client holds its body back until asked; nobody will ask.
		closeConn = true
	}
	if closeConn {
		h["Connection"] = []string{"close"}
		w.req.Close = true
	} else if !w.req.ProtoAtLeast(1, 1) {
		h["Connection"] = []string{"keep-alive"}
	}
	bw := w.c.bw
	_, _ = bw.WriteString("HTTP/1.1 ")
	_, _ = bw.WriteString(strconv.Itoa(w.status))
	_ = bw.WriteByte(' ')
	_, _ = bw.WriteString(http.StatusText(w.status))
	_, _ = bw.WriteString("\r\n")
	for k, vs := range h {
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) || !httpguts.ValidHeaderFieldName(k) {
				continue // never let a handler's value split the answer
			}
			_, _ = bw.WriteString(k)
			_, _ = bw.WriteString(": ")
			_, _ = bw.WriteString(v)
			_, _ = bw.WriteString("\r\n")
		}
	}
	_, _ = bw.WriteString("\r\n")
	if len(w.pending) > 0 {
		p := w.pending
		w.pending = w.pending[:0]
		if err := w.writeBody(p); err != nil {
			w.failed = err
		}
	}
}

func (w *response) writeBody(p []byte) error {
	if w.noBody || len(p) == 0 {
		return nil
	}
	bw := w.c.bw
	if w.chunked {
		_, _ = bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
		_, _ = bw.WriteString("\r\n")
	}
	_, err := bw.Write(p)
	if w.chunked {
		_, err = bw.WriteString("\r\n")
	}
	return err
}

// finish completes the answer; false means the connection cannot carry
// another request.
func (w *response) finish() bool {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.sentHeader {
		w.settleBody()
		w.sendHeader(true)
	}
	if w.chunked && w.failed == nil {
		_, w.failed = w.c.bw.WriteString("0\r\n\r\n")
	}
	if w.declared >= 0 && w.written < w.declared && !w.noBody {
		return false // the client still waits for bytes that never come
	}
	return w.failed == nil && !w.gone.Load() && !w.req.Close
}

// settleBody decides, before the head goes out, whether the connection
// can carry another request after a body the handler left unread: a small
// rest is read away; a client still waiting for 100 Continue has not sent
// it, and a large rest is not worth reading, so the answer says
// Connection: close.
func (w *response) settleBody() {
	if b := w.body; b != nil && !b.finish(maxDrain) {
		w.req.Close = true
	}
}

// Flush implements http.Flusher.
func (w *response) Flush() { _ = w.FlushError() }

// FlushError sends what is buffered; http.ResponseController calls it.
func (w *response) FlushError() error {
	if w.hijacked {
		return http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.sentHeader {
		w.sendHeader(false)
	}
	if w.failed != nil {
		return w.failed
	}
	if err := w.c.bw.Flush(); err != nil {
		w.failed = err
		return err
	}
	if b, ok := w.req.Body.(*requestBody); !ok || b.eof.Load() {
		w.armWatch(0) // a stream: watch from now
	}
	return nil
}

// watchAfter is how long a request runs before the server watches its
// connection for the client leaving. Most answers take less, and cost no
// watcher; a slow one (a hung upstream, a stream) is abandoned when its
// client goes, so the upstream call stops too.
const watchAfter = 100 * time.Millisecond

// Watcher states.
const (
	watchNone = iota
	watchArmed
	watchRunning
	watchStopped
)

// armWatch starts the watcher after d, once the request body has been read
// (the watcher reads the connection).
func (w *response) armWatch(d time.Duration) {
	w.watchMu.Lock()
	defer w.watchMu.Unlock()
	if w.watchState == watchArmed && d <= 0 {
		w.watchTimer.Stop() // now rather than later
		w.watchLocked()
		return
	}
	if w.watchState != watchNone {
		return
	}
	w.watchState = watchArmed
	if d <= 0 {
		w.watchLocked()
		return
	}
	w.watchTimer = time.AfterFunc(d, func() {
		w.watchMu.Lock()
		defer w.watchMu.Unlock()
		if w.watchState == watchArmed {
			w.watchLocked()
		}
	})
}

// watchLocked starts the watcher: a read that returns only when the client
// sends more (a pipelined request), leaves, or stopWatch ends it. Leaving
// cancels the request's context.
func (w *response) watchLocked() {
	w.watchState = watchRunning
	done := make(chan struct{})
	w.watchDone = done
	// Under the lock, so that stopWatch's deadline comes after this one.
	_ = w.c.nc.SetReadDeadline(time.Time{})
	go func() {
		defer close(done)
		if _, err := w.c.br.Peek(1); err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				w.gone.Store(true)
				w.cancel()
			}
		}
	}()
}

// stopWatch ends the watcher before the connection reads again.
func (w *response) stopWatch() {
	w.watchMu.Lock()
	state := w.watchState
	w.watchState = watchStopped
	if state == watchArmed && w.watchTimer != nil {
		w.watchTimer.Stop() // a firing timer finds the state stopped
	}
	if state != watchRunning {
		w.watchMu.Unlock()
		return
	}
	_ = w.c.nc.SetReadDeadline(aLongTimeAgo)
	w.watchMu.Unlock()
	<-w.watchDone
	// The watcher's peek failed on the deadline and bufio handed that
	// error over, so the reader keeps what it holds and reads on.
	_ = w.c.nc.SetReadDeadline(time.Time{})
}

// SetReadDeadline moves the request's read deadline; for
// http.ResponseController.
func (w *response) SetReadDeadline(t time.Time) error { return w.c.nc.SetReadDeadline(t) }

// SetWriteDeadline moves the answer's write deadline; for
// http.ResponseController.
func (w *response) SetWriteDeadline(t time.Time) error {
	w.deadlines = true
	return w.c.nc.SetWriteDeadline(t)
}

// Hijack implements http.Hijacker: the handler takes the connection over.
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if w.sentHeader {
		return nil, nil, errors.New("h1: hijack after the answer began")
	}
	w.stopWatch()
	w.hijacked = true
	_ = w.c.nc.SetDeadline(time.Time{}) // the connection's bounds were the server's
	return w.c.nc, bufio.NewReadWriter(w.c.br, w.c.bw), nil
}

package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// HTTPServer is a listener that serves one handler. Bind to port 0 to let
// the kernel pick a free port; Addr tells which one it got.
type HTTPServer struct {
	listen string
	srv    Server
	ln     net.Listener
	logger *slog.Logger
}

// Server is what an HTTPServer runs: net/http's server, or another with
// its methods.
type Server interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Close() error
}

// The bounds of every mercato listener: slow clients must not hold
// connections forever. No write timeout: server-sent event streams are
// long responses by design.
const (
	ReadHeaderTimeout = 5 * time.Second
	ReadTimeout       = 30 * time.Second
	IdleTimeout       = 120 * time.Second
)

// NewHTTPServer returns a net/http server for handler that will listen on
// addr ("127.0.0.1:0" for a kernel-chosen port).
func NewHTTPServer(addr string, handler http.Handler, logger *slog.Logger) *HTTPServer {
	return NewServer(addr, &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		IdleTimeout:       IdleTimeout,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}, logger)
}

// NewServer returns srv, to listen on addr. Its Serve must return
// http.ErrServerClosed once shut down.
func NewServer(addr string, srv Server, logger *slog.Logger) *HTTPServer {
	return &HTTPServer{listen: addr, srv: srv, logger: logger}
}

// Start binds the listener and serves in the background.
func (s *HTTPServer) Start(ctx context.Context) error {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", s.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.listen, err)
	}
	s.ln = ln
	// The goroutine ends when Stop shuts the server down.
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logger.Error("http server stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return nil
}

// Stop stops accepting connections and waits for requests in flight until
// ctx ends; then it closes what is left.
func (s *HTTPServer) Stop(ctx context.Context) error {
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
		return fmt.Errorf("drain http server: %w", err)
	}
	return nil
}

// Addr is the bound address (host:port) once started.
func (s *HTTPServer) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Hook returns the server as a lifecycle hook.
func (s *HTTPServer) Hook(name string) Hook {
	return Hook{Name: name, Start: s.Start, Stop: s.Stop}
}

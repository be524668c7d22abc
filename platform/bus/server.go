package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// defaultStartTimeout bounds the wait for an embedded server when ctx has no deadline.
const defaultStartTimeout = 10 * time.Second

// ServerConfig configures an embedded NATS server.
type ServerConfig struct {
	// StoreDir holds the JetStream store; a server restarted on the same
	// directory finds its streams and messages again.
	StoreDir string
	// Logger receives the server's warnings and errors; nil silences it.
	Logger *slog.Logger
	// Port to listen on; 0 lets the kernel pick one. A server restarted on
	// the port it had is found again by clients reconnecting to its URL.
	Port int
}

// Server is a NATS server with JetStream running inside this process, for the
// one-process mode. Clients still reach it over loopback TCP, exactly as they
// reach an external cluster.
type Server struct {
	ns *server.Server
}

// StartServer starts NATS with JetStream on 127.0.0.1, on a port the kernel
// picks, and returns once it accepts connections.
func StartServer(ctx context.Context, cfg ServerConfig) (*Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("start nats server: empty store dir")
	}
	ns, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      port(cfg.Port),
		JetStream: true,
		StoreDir:  cfg.StoreDir,
		NoSigs:    true, // the process owns its signals, not the library
		NoLog:     true, // logs go through cfg.Logger only
	})
	if err != nil {
		return nil, fmt.Errorf("start nats server: %w", err)
	}
	if cfg.Logger != nil {
		ns.SetLoggerV2(serverLogger{log: cfg.Logger}, false, false, false)
	}
	go ns.Start()

	wait := defaultStartTimeout
	if deadline, ok := ctx.Deadline(); ok {
		wait = time.Until(deadline)
	}
	if !ns.ReadyForConnections(wait) {
		ns.Shutdown()
		ns.WaitForShutdown()
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("start nats server: %w", err)
		}
		return nil, fmt.Errorf("start nats server: not ready after %s", wait)
	}
	return &Server{ns: ns}, nil
}

func port(p int) int {
	if p == 0 {
		return server.RANDOM_PORT
	}
	return p
}

// ClientURL is the URL clients connect to, e.g. nats://127.0.0.1:40123.
func (s *Server) ClientURL() string {
	return s.ns.ClientURL()
}

// Shutdown stops the server and waits until it has stopped; the store is
// flushed, so a new server on the same StoreDir resumes from it.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// serverLogger maps the server's warnings and errors onto slog; notices,
// debug and trace lines are dropped as noise for an embedded broker.
type serverLogger struct {
	log *slog.Logger
}

func (l serverLogger) Noticef(string, ...any) {}
func (l serverLogger) Debugf(string, ...any)  {}
func (l serverLogger) Tracef(string, ...any)  {}

func (l serverLogger) Warnf(format string, v ...any) {
	l.log.Warn(fmt.Sprintf(format, v...), "component", "nats-server")
}

func (l serverLogger) Errorf(format string, v ...any) {
	l.log.Error(fmt.Sprintf(format, v...), "component", "nats-server")
}

// Fatalf is logged, not fatal: the embedding process decides whether to exit.
func (l serverLogger) Fatalf(format string, v ...any) {
	l.log.Error(fmt.Sprintf(format, v...), "component", "nats-server", "fatal", true)
}

var _ server.Logger = serverLogger{}

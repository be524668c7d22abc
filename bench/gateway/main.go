// Command gateway is the benchmark of mercato's API gateway against nginx
// and a default httputil.ReverseProxy, all proxying one upstream on this
// machine. bench/gateway/run.sh drives it; bench/README.md has the results.
//
//	gateway upstream            the upstream every contestant proxies
//	gateway proxies -upstream A the reverse proxy and mercato's gateways in front of A
//	gateway load -url U -rate R open-loop load at a fixed rate, with p50/p99
//
// upstream and proxies print their addresses as KEY=VALUE lines, then
// READY=1, and serve until interrupted.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/time/rate"

	"github.com/mercato-shop/mercato/deploy"
	"github.com/mercato-shop/mercato/gateway"
	"github.com/mercato-shop/mercato/gateway/h1"
	"github.com/mercato-shop/mercato/platform/chaos"
	"github.com/mercato-shop/mercato/platform/discovery"
	"github.com/mercato-shop/mercato/platform/resilience"
	"github.com/mercato-shop/mercato/platform/runtime"
	"github.com/mercato-shop/mercato/platform/telemetry"
	"github.com/mercato-shop/mercato/platform/web"
)

const usage = `usage:
  gateway upstream [-listen ADDR]
  gateway proxies -upstream HOST:PORT [-dir DIR] [-cpuprofile FILE]
  gateway load -url URL -rate N [-duration D] [-warmup D] [-c N] [-H "Name: value"]...`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "gateway bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "upstream":
		return runUpstream(ctx, args[1:], out)
	case "proxies":
		return runProxies(ctx, args[1:], out)
	case "load":
		return runLoad(ctx, args[1:], out)
	default:
		return fmt.Errorf("unknown mode %q\n%s", args[0], usage)
	}
}

// body is the upstream's answer to every request: about 200 bytes of JSON,
// the size of a small catalog read.
var body = []byte(`{"id":"0192f5e4-7b7c-7cc2-9a57-3f1e2d4c5b6a","sku":"MUG-CLASSIC-350","name":"Classic mug, 350 ml","price":{"amount":1290,"currency":"EUR"},"stock":42,"tags":["kitchen","ceramic"]}` + "\n")

// runUpstream serves body on any path with a plain net/http server, the
// same for every contestant.
func runUpstream(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("upstream", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	length := fmt.Sprint(len(body))
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", length)
		_, _ = w.Write(body)
	})
	addr, err := serve(ctx, *listen, h)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "UPSTREAM=%s\nREADY=1\n", addr)
	<-ctx.Done()
	return nil
}

// serve runs a default http.Server for h until ctx ends and returns its address.
func serve(ctx context.Context, listen string, h http.Handler) (string, error) {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", listen)
	if err != nil {
		return "", fmt.Errorf("listen on %s: %w", listen, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	go func() { <-ctx.Done(); _ = srv.Close() }()
	return ln.Addr().String(), nil
}

// Route files of the two gateway variants. Both route every path under
// /api/ to the upstream, known to discovery as "bench".
const (
	// plainRoutes: no token, no limit; the access log still runs.
	plainRoutes = `jwt:
  issuer: mercato-bench
  audience: mercato
  jwks: %s
routes:
  - path: /api/
    methods: [GET]
    service: bench
    auth: none
    ratelimit: off
`
	// fullRoutes: a token is verified on every request (the gateway's cache
	// of verified tokens included, as in production) and its subject is
	// rate limited, far above what this machine can send.
	fullRoutes = `jwt:
  issuer: mercato-bench
  audience: mercato
  jwks: %s
routes:
  - path: /api/
    methods: [GET]
    service: bench
    auth: jwt
    ratelimit: 1000000/second burst 1000000
`
)

// runProxies starts the contestants in front of the upstream:
//
//	REVERSEPROXY  httputil.NewSingleHostReverseProxy with its defaults
//	REVERSEPROXY_POOLED  httputil.ReverseProxy over web.NewTransport (64 idle
//	              connections per host), nothing else
//	REVERSEPROXY_H1  httputil.ReverseProxy over the gateway's transport
//	              (gateway/h1) and buffer pool, on net/http's server
//	MERCATO_A     the gateway, auth none, no rate limit, access log to io.Discard
//	MERCATO_B     the gateway, JWT + rate limit, access log to a file
//	MERCATO_C     MERCATO_B with the transport of `mercato up`: balancer,
//	              otelhttp client spans and the resilience policies
//
// Each gateway runs in the production handler stack (node.Start's and
// gateway.Service's): gateway.NewServer around web.Instrument around the
// chaos middleware around a ServeMux holding health routes and the
// gateway's Reloader, over h1.Transport. Tracing uses the no-op tracer
// provider: spans are made, none exported. The access log goes through
// telemetry.Buffered, as `mercato up` writes its logs.
func runProxies(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("proxies", flag.ContinueOnError)
	upstream := fs.String("upstream", "", "upstream address, host:port")
	dir := fs.String("dir", "", "directory for the access log of MERCATO_B and MERCATO_C (default: a new temporary one)")
	profile := fs.String("cpuprofile", "", "write a CPU profile to this file between SIGUSR1 and SIGUSR2")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *upstream == "" {
		return errors.New("proxies: -upstream is required")
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "gateway-bench-")
		if err != nil {
			return err
		}
		*dir = d
	}
	if *profile != "" {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGUSR1, syscall.SIGUSR2)
		defer signal.Stop(sig)
		go profileOnSignal(ctx, *profile, sig)
	}

	// Tokens are signed as the customer service signs them; the key set is
	// served by a server of its own, fetched once by keyfunc at start.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("signing key: %w", err)
	}
	const kid = "bench-1"
	set, err := jwks(&key.PublicKey, kid)
	if err != nil {
		return err
	}
	jwksAddr, err := serve(ctx, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(set)
	}))
	if err != nil {
		return err
	}
	jwksURL := "http://" + jwksAddr + "/.well-known/jwks.json"
	token, err := sign(key, kid)
	if err != nil {
		return err
	}

	target := &url.URL{Scheme: "http", Host: *upstream}
	rpAddr, err := serve(ctx, "127.0.0.1:0", httputil.NewSingleHostReverseProxy(target))
	if err != nil {
		return err
	}
	// A Go proxy on net/http alone, with a pool sized for the load.
	pooledAddr, err := serve(ctx, "127.0.0.1:0", &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport: web.NewTransport(),
	})
	if err != nil {
		return err
	}

	// The floor of the gateway: the same over its own upstream transport.
	h1Addr, err := serve(ctx, "127.0.0.1:0", &httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport:  h1.New(web.NewTransport()),
		BufferPool: &h1.Buffers{},
	})
	if err != nil {
		return err
	}

	tp := noop.NewTracerProvider()
	services := map[string][]string{"bench": {*upstream}}
	plainTransport := func() (http.RoundTripper, error) {
		return discovery.Transport(discovery.Static(services), h1.New(web.NewTransport())), nil
	}
	// What gateway.Service.setup builds over node's balancer and policies.
	productionTransport := func() (http.RoundTripper, error) {
		bal, err := discovery.NewBalancer(discovery.Static(services), discovery.BalancerConfig{})
		if err != nil {
			return nil, fmt.Errorf("balancer: %w", err)
		}
		pol, err := resilience.Load(deploy.Resilience(), slog.New(slog.DiscardHandler))
		if err != nil {
			return nil, fmt.Errorf("resilience policies: %w", err)
		}
		t := discovery.Transport(bal, otelhttp.NewTransport(h1.New(web.NewTransport()),
			otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(telemetry.Propagator())))
		return pol.ServiceTransport(t), nil
	}

	accessLog := filepath.Join(*dir, "access.log")
	logFile, err := os.OpenFile(accessLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("access log: %w", err)
	}
	defer logFile.Close()
	// As `mercato up` writes its logs.
	logs := telemetry.NewBuffered(logFile, 64<<10, 200*time.Millisecond)
	defer logs.Close()

	variants := []struct {
		name      string
		routes    string
		log       io.Writer
		transport func() (http.RoundTripper, error)
	}{
		{"MERCATO_A", plainRoutes, io.Discard, plainTransport},
		{"MERCATO_B", fullRoutes, logs, plainTransport},
		{"MERCATO_C", fullRoutes, logs, productionTransport},
	}
	addrs := make([]string, len(variants))
	for i, v := range variants {
		cfg, err := gateway.ParseConfig(fmt.Appendf(nil, v.routes, jwksURL))
		if err != nil {
			return fmt.Errorf("%s: %w", v.name, err)
		}
		transport, err := v.transport()
		if err != nil {
			return fmt.Errorf("%s: %w", v.name, err)
		}
		logger := telemetry.NewLogger(v.log, gateway.Name, slog.LevelInfo)
		addr, err := startGateway(ctx, cfg, transport, jwksURL, logger, tp)
		if err != nil {
			return fmt.Errorf("%s: %w", v.name, err)
		}
		addrs[i] = addr
	}

	fmt.Fprintf(out, "REVERSEPROXY=%s\nREVERSEPROXY_POOLED=%s\nREVERSEPROXY_H1=%s\n", rpAddr, pooledAddr, h1Addr)
	for i, v := range variants {
		fmt.Fprintf(out, "%s=%s\n", v.name, addrs[i])
	}
	// A bench-only key made for this run: the token opens nothing else.
	fmt.Fprintf(out, "TOKEN=%s\nACCESS_LOG=%s\nREADY=1\n", token, accessLog)
	<-ctx.Done()
	return nil
}

// startGateway serves the gateway for cfg in the handler stack of a node
// and returns its address. It stops when ctx ends.
func startGateway(ctx context.Context, cfg gateway.Config, transport http.RoundTripper, jwksURL string, logger *slog.Logger, tp noop.TracerProvider) (string, error) {
	// As gateway.Service.setup builds it.
	keys, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{jwksURL}, keyfunc.Override{
		Client:            &http.Client{Transport: transport, Timeout: 5 * time.Second},
		RefreshInterval:   10 * time.Minute,
		RateLimitWaitMax:  time.Second,
		RefreshUnknownKID: rate.NewLimiter(rate.Every(time.Second), 1),
	})
	if err != nil {
		return "", fmt.Errorf("token keys: %w", err)
	}
	rl := gateway.NewReloader(cfg, func(c gateway.Config) *gateway.Gateway {
		return gateway.New(c, transport, keys.Keyfunc, logger)
	}, nil)
	mux := http.NewServeMux()
	(&runtime.Health{}).Register(mux)
	mux.Handle("/", rl)
	// As node.Start wraps its mux.
	h := web.Instrument((&chaos.Faults{}).Middleware(mux), tp, logger)
	srv := runtime.NewServer("127.0.0.1:0", gateway.NewServer(h, logger), logger)
	if err := srv.Start(ctx); err != nil {
		return "", err
	}
	go func() {
		<-ctx.Done()
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Stop(stopCtx)
		_ = rl.Close()
	}()
	return srv.Addr(), nil
}

// jwks is the public key set holding pub, as the customer service publishes it.
func jwks(pub *ecdsa.PublicKey, kid string) ([]byte, error) {
	point, err := pub.Bytes() // 0x04 || X || Y
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
		"x": enc(point[1:33]), "y": enc(point[33:]),
	}}})
}

// sign issues one access token for the whole run: one caller, so every
// request hits the same rate limit key and the same verified-token entry.
func sign(key *ecdsa.PrivateKey, kid string) (string, error) {
	now := time.Now()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"iss":   "mercato-bench",
		"aud":   "mercato",
		"sub":   uuid.Must(uuid.NewV7()).String(),
		"roles": []string{"customer"},
		"iat":   now.Unix(),
		"exp":   now.Add(24 * time.Hour).Unix(),
	})
	tok.Header["kid"] = kid
	raw, err := tok.SignedString(key)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return raw, nil
}

// profileOnSignal writes a CPU profile to path from SIGUSR1 to SIGUSR2, so
// that it covers one measured run and not the idle time around it, and the
// allocation profiles at both signals to path.allocs-start and
// path.allocs-end (go tool pprof -sample_index=alloc_space -base start end).
func profileOnSignal(ctx context.Context, path string, sig <-chan os.Signal) {
	var f *os.File
	allocs := func(name string) {
		if a, err := os.Create(path + ".allocs-" + name); err == nil {
			_ = pprof.Lookup("allocs").WriteTo(a, 0)
			_ = a.Close()
		}
	}
	stopProfile := func() {
		if f != nil {
			pprof.StopCPUProfile()
			_ = f.Close()
			f = nil
			allocs("end")
		}
	}
	defer stopProfile()
	for {
		select {
		case <-ctx.Done():
			return
		case s := <-sig:
			if s == syscall.SIGUSR2 {
				stopProfile()
				continue
			}
			if f != nil {
				continue
			}
			allocs("start")
			var err error
			if f, err = os.Create(path); err != nil {
				fmt.Fprintln(os.Stderr, "cpu profile:", err)
				continue
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				fmt.Fprintln(os.Stderr, "cpu profile:", err)
				_ = f.Close()
				f = nil
			}
		}
	}
}

// headerFlags collects repeated -H flags.
type headerFlags []string

func (h *headerFlags) String() string { return strings.Join(*h, ", ") }

func (h *headerFlags) Set(v string) error {
	name, value, ok := strings.Cut(v, ":")
	if !ok || strings.TrimSpace(name) == "" || strings.ContainsAny(v, "\r\n") {
		return fmt.Errorf("header %q must be Name: value", v)
	}
	*h = append(*h, strings.TrimSpace(name)+": "+strings.TrimSpace(value))
	return nil
}

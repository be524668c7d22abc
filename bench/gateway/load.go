package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"
)

// loadConfig is one fixed-rate run.
type loadConfig struct {
	url      *url.URL
	rate     int           // requests per second
	duration time.Duration // measured
	warmup   time.Duration // sent at the same rate, not measured
	conns    int
	headers  []string
}

// loadResult is what a run measured.
type loadResult struct {
	sent, ok, errors int
	firstError       string
	latencies        []time.Duration // of the measured requests that succeeded, sorted
}

// runLoad sends requests at a fixed rate whatever the answers' pace (an
// open loop, as wrk2 does): each request is due at start + i/rate, and its
// latency runs from when it was due, so a stalled server is charged for the
// requests queued behind it instead of hiding them (coordinated omission).
func runLoad(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	rawURL := fs.String("url", "", "URL to GET")
	var cfg loadConfig
	fs.IntVar(&cfg.rate, "rate", 0, "requests per second")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "measured time")
	fs.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "time at the same rate before measuring")
	fs.IntVar(&cfg.conns, "c", 64, "connections (kept alive)")
	var headers headerFlags
	fs.Var(&headers, "H", "request header \"Name: value\" (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	u, err := url.Parse(*rawURL)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return fmt.Errorf("load: -url %q must be an http URL", *rawURL)
	}
	if cfg.rate <= 0 || cfg.conns <= 0 || cfg.duration <= 0 || cfg.warmup < 0 {
		return errors.New("load: -rate, -c and -duration must be positive")
	}
	cfg.url, cfg.headers = u, headers
	res := load(ctx, cfg)
	if err := ctx.Err(); err != nil {
		return err
	}
	p := func(q float64) string { return fmt.Sprintf("%.3f", ms(percentile(res.latencies, q))) }
	fmt.Fprintf(out, "rate=%d achieved=%.0f sent=%d ok=%d errors=%d p50_ms=%s p90_ms=%s p99_ms=%s p999_ms=%s max_ms=%s\n",
		cfg.rate, float64(len(res.latencies))/cfg.duration.Seconds(), res.sent, len(res.latencies), res.errors,
		p(0.50), p(0.90), p(0.99), p(0.999), p(1))
	if res.firstError != "" {
		fmt.Fprintf(out, "first_error=%q\n", res.firstError)
	}
	return nil
}

// load runs cfg: a scheduler hands each request's due time to whichever
// connection is free.
func load(ctx context.Context, cfg loadConfig) loadResult {
	total := int(float64(cfg.rate) * (cfg.warmup + cfg.duration).Seconds())
	// Room for every request, so the scheduler never waits on the workers.
	due := make(chan time.Time, total)
	start := time.Now().Add(10 * time.Millisecond) // after the workers have started
	measureFrom := start.Add(cfg.warmup)
	interval := time.Second / time.Duration(cfg.rate)

	req := request(cfg.url, cfg.headers)
	results := make([]loadResult, cfg.conns)
	var wg sync.WaitGroup
	for i := range cfg.conns {
		wg.Go(func() { results[i] = worker(ctx, cfg.url.Host, req, due, measureFrom) })
	}
	// Ticks of 200µs release every request due by then: sleeping once per
	// request would cost more than the requests at tens of thousands a second.
	for i := 0; i < total && ctx.Err() == nil; {
		now := time.Now()
		for ; i < total; i++ {
			t := start.Add(time.Duration(i) * interval)
			if t.After(now) {
				break
			}
			due <- t
		}
		time.Sleep(200 * time.Microsecond)
	}
	close(due)
	wg.Wait()

	var all loadResult
	for _, r := range results {
		all.sent += r.sent
		all.errors += r.errors
		if all.firstError == "" {
			all.firstError = r.firstError
		}
		all.latencies = append(all.latencies, r.latencies...)
	}
	slices.Sort(all.latencies)
	return all
}

// worker sends the requests it is handed over one kept-alive connection,
// dialling again after an error.
func worker(ctx context.Context, addr string, req []byte, due <-chan time.Time, measureFrom time.Time) loadResult {
	var (
		res  loadResult
		conn net.Conn
		br   *bufio.Reader
	)
	fail := func(err error) {
		res.errors++
		if res.firstError == "" {
			res.firstError = err.Error()
		}
		if conn != nil {
			_ = conn.Close()
			conn = nil
		}
	}
	defer func() {
		if conn != nil {
			_ = conn.Close()
		}
	}()
	var d net.Dialer
	for t := range due {
		if ctx.Err() != nil {
			continue // drain
		}
		res.sent++
		if conn == nil {
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				fail(err)
				continue
			}
			conn, br = c, bufio.NewReaderSize(c, 4096)
		}
		if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
			fail(err)
			continue
		}
		if _, err := conn.Write(req); err != nil {
			fail(err)
			continue
		}
		keep, err := readResponse(br)
		if err != nil {
			fail(err)
			continue
		}
		if !t.Before(measureFrom) {
			res.latencies = append(res.latencies, time.Since(t))
		}
		if !keep {
			_ = conn.Close()
			conn = nil
		}
	}
	return res
}

// request is a GET of u as it goes on the wire.
func request(u *url.URL, headers []string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: mercato-gateway-bench\r\n", u.RequestURI(), u.Host)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// readResponse reads one response and discards its body. Anything but 200
// is an error. keep is false when the server closes the connection.
func readResponse(br *bufio.Reader) (keep bool, err error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return false, fmt.Errorf("read status: %w", err)
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return false, fmt.Errorf("bad status line %q", line)
	}
	if status := string(line[9:12]); status != "200" {
		return false, fmt.Errorf("status %s", bytes.TrimSpace(line[9:]))
	}
	length, chunked, keep := -1, false, true
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return false, fmt.Errorf("read header: %w", err)
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil {
				return false, fmt.Errorf("content length %q", value)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			keep = !bytes.EqualFold(value, []byte("close"))
		}
	}
	switch {
	case chunked:
		return keep, discardChunked(br)
	case length >= 0:
		if _, err := br.Discard(length); err != nil {
			return false, fmt.Errorf("read body: %w", err)
		}
		return keep, nil
	default:
		return false, errors.New("a response without a length")
	}
}

func discardChunked(br *bufio.Reader) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("read chunk size: %w", err)
		}
		hex, _, _ := bytes.Cut(bytes.TrimRight(line, "\r\n"), []byte(";"))
		n, err := strconv.ParseInt(string(hex), 16, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("chunk size %q", line)
		}
		if n == 0 {
			// Trailers, if any, end with an empty line.
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return fmt.Errorf("read trailer: %w", err)
				}
				if len(bytes.TrimRight(line, "\r\n")) == 0 {
					return nil
				}
			}
		}
		if _, err := br.Discard(int(n) + 2); err != nil {
			return fmt.Errorf("read chunk: %w", err)
		}
	}
}

// percentile of sorted, q in [0, 1]; 0 for none.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1 // nearest rank
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

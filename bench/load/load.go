// Package load drives a running shop through its gateway the way customers
// would, and measures it: `mercato load` is its command line.
package load

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Config says how hard to drive the shop.
type Config struct {
	BaseURL     string        // the gateway, http://localhost:8080
	Concurrency int           // workers placing orders at once
	Duration    time.Duration // how long to place orders
	Customers   int           // accounts the workers share
	Token       string        // payment token: tok_ok or tok_decline
	Poll        time.Duration // how often a worker checks its order's status
}

// Result of one measurement.
type Result struct {
	Name     string
	Count    int // completed operations
	Errors   int
	Elapsed  time.Duration
	P50, P99 time.Duration
	Outcomes map[string]int // final order statuses, for orders
	// FirstError is the first failure seen, if any.
	FirstError string
}

// Rate is completed operations per second.
func (r Result) Rate() float64 { return float64(r.Count) / r.Elapsed.Seconds() }

func (r Result) String() string {
	s := fmt.Sprintf("%-22s %8.0f/s  p50 %7.1fms  p99 %7.1fms  n=%d errors=%d %v",
		r.Name, r.Rate(), ms(r.P50), ms(r.P99), r.Count, r.Errors, outcomes(r.Outcomes))
	if r.FirstError != "" {
		s += "\n  first error: " + r.FirstError
	}
	return s
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func outcomes(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	b, _ := json.Marshal(m)
	return string(b)
}

type client struct {
	http *http.Client
	base string
}

func (c client) call(ctx context.Context, method, path, token string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	// Measure the services, not the gateway's cache.
	req.Header.Set("Cache-Control", "no-cache")
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		return resp.StatusCode, json.Unmarshal(b, out)
	}
	return resp.StatusCode, nil
}

type product struct {
	ID        string `json:"id"`
	Available int64  `json:"available"`
}

// Setup registers the customers and reads the catalog: what every run needs.
type Setup struct {
	c        client
	tokens   []string
	products []string
}

// Prepare registers cfg.Customers fresh accounts and picks the products
// deep enough in stock to order from.
func Prepare(ctx context.Context, cfg Config) (*Setup, error) {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = cfg.Concurrency * 2
	s := &Setup{c: client{http: &http.Client{Transport: transport, Timeout: 30 * time.Second}, base: cfg.BaseURL}}
	var ps []product
	if _, err := s.c.call(ctx, http.MethodGet, "/api/products", "", nil, &ps); err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	for _, p := range ps {
		if p.Available >= 1000 {
			s.products = append(s.products, p.ID)
		}
	}
	if len(s.products) == 0 {
		return nil, errors.New("no product with stock to order")
	}
	for range max(cfg.Customers, 1) {
		email := "load-" + uuid.NewString() + "@example.com"
		cred := map[string]string{"email": email, "name": "Load", "password": "load password"}
		if _, err := s.c.call(ctx, http.MethodPost, "/api/customers", "", cred, nil); err != nil {
			return nil, fmt.Errorf("register: %w", err)
		}
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		if _, err := s.c.call(ctx, http.MethodPost, "/api/auth/login", "", map[string]string{"email": email, "password": "load password"}, &tok); err != nil {
			return nil, fmt.Errorf("login: %w", err)
		}
		s.tokens = append(s.tokens, tok.AccessToken)
	}
	return s, nil
}

// Catalog reads the catalog as fast as cfg.Concurrency workers can for
// cfg.Duration: the baseline that the order rate is compared with.
func (s *Setup) Catalog(ctx context.Context, cfg Config) Result {
	return s.run(ctx, cfg, "catalog reads", func(ctx context.Context, _ int, rec *recorder) {
		start := time.Now()
		_, err := s.c.call(ctx, http.MethodGet, "/api/products", "", nil, nil)
		rec.add(ctx, time.Since(start), err, "")
	})
}

// Orders places orders for cfg.Duration and measures each from the POST to
// the moment its status is seen final (CONFIRMED or CANCELLED).
func (s *Setup) Orders(ctx context.Context, cfg Config) Result {
	if cfg.Poll <= 0 {
		cfg.Poll = 5 * time.Millisecond
	}
	return s.run(ctx, cfg, "orders to final status", func(ctx context.Context, worker int, rec *recorder) {
		token := s.tokens[worker%len(s.tokens)]
		body := map[string]any{
			"items":   []map[string]any{{"product_id": s.products[rand.IntN(len(s.products))], "quantity": 1}},
			"payment": map[string]string{"token": cfg.Token},
		}
		start := time.Now()
		var o struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		}
		if _, err := s.c.call(ctx, http.MethodPost, "/api/orders", token, body, &o); err != nil {
			rec.add(ctx, time.Since(start), err, "")
			return
		}
		for o.Status == "PENDING" {
			select {
			case <-ctx.Done():
				return
			case <-time.After(cfg.Poll):
			}
			if _, err := s.c.call(ctx, http.MethodGet, "/api/orders/"+o.ID, token, nil, &o); err != nil {
				rec.add(ctx, time.Since(start), err, "")
				return
			}
		}
		rec.add(ctx, time.Since(start), nil, o.Status)
	})
}

type recorder struct {
	mu        sync.Mutex
	latencies []time.Duration
	errors    int
	outcomes  map[string]int
	firstErr  error
}

// add records one operation. A failure caused by the run's own end is not
// the shop's error and is not counted.
func (r *recorder) add(ctx context.Context, d time.Duration, err error, outcome string) {
	if err != nil && ctx.Err() != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.errors++
		if r.firstErr == nil {
			r.firstErr = err
		}
		return
	}
	r.latencies = append(r.latencies, d)
	if outcome != "" {
		r.outcomes[outcome]++
	}
}

func (s *Setup) run(ctx context.Context, cfg Config, name string, op func(ctx context.Context, worker int, rec *recorder)) Result {
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	rec := &recorder{outcomes: map[string]int{}}
	start := time.Now()
	var wg sync.WaitGroup
	for w := range max(cfg.Concurrency, 1) {
		wg.Go(func() {
			for ctx.Err() == nil {
				op(ctx, w, rec)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(rec.latencies)
	res := Result{Name: name, Count: len(rec.latencies), Errors: rec.errors, Elapsed: elapsed, Outcomes: rec.outcomes}
	if n := len(rec.latencies); n > 0 {
		res.P50 = rec.latencies[n/2]
		res.P99 = rec.latencies[min(n-1, n*99/100)]
	}
	if rec.firstErr != nil {
		res.FirstError = rec.firstErr.Error()
	}
	return res
}

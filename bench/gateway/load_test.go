package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestReadResponse_ReadsEachFramingAndStopsAtItsEnd(t *testing.T) {
	const next = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
	for name, tc := range map[string]struct {
		raw     string
		keep    bool
		wantErr string
	}{
		"content length": {raw: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", keep: true},
		"chunked":        {raw: "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\nTrailer: v\r\n\r\n", keep: true},
		"close":          {raw: "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi"},
		"not 200":        {raw: "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n", wantErr: "status 401 Unauthorized"},
		"no length":      {raw: "HTTP/1.1 200 OK\r\n\r\nhello", wantErr: "without a length"},
	} {
		t.Run(name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tc.raw + next))
			keep, err := readResponse(br)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || keep != tc.keep {
				t.Fatalf("keep %v, err %v; want keep %v", keep, err, tc.keep)
			}
			// The body was consumed exactly: the next response reads cleanly.
			if _, err := readResponse(br); err != nil {
				t.Fatalf("the next response: %v", err)
			}
		})
	}
}

func TestPercentile_IsTheNearestRank(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	for q, want := range map[float64]time.Duration{0.5: 50, 0.99: 99, 0.999: 100, 1: 100, 0: 1} {
		if got := percentile(d, q); got != want {
			t.Errorf("percentile(%v) = %d, want %d", q, got, want)
		}
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("percentile of none = %d, want 0", got)
	}
}

func TestLoad_SendsEveryRequestWithItsHeadersAndCountsFailures(t *testing.T) {
	var served, bad atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer t" {
			bad.Add(1)
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		served.Add(1)
		fmt.Fprint(w, "ok")
	}))
	defer srv.Close()
	u, err := url.Parse(srv.URL + "/api/x")
	if err != nil {
		t.Fatal(err)
	}
	cfg := loadConfig{url: u, rate: 200, duration: 500 * time.Millisecond, warmup: 250 * time.Millisecond, conns: 4}

	res := load(context.Background(), withHeader(cfg, "Authorization: Bearer t"))
	if res.sent != 150 || res.errors != 0 || served.Load() != 150 {
		t.Fatalf("sent %d, errors %d, served %d; want 150, 0, 150", res.sent, res.errors, served.Load())
	}
	if len(res.latencies) != 100 {
		t.Fatalf("%d latencies measured, want the 100 after the warm-up", len(res.latencies))
	}

	res = load(context.Background(), cfg)
	if res.errors != 150 || len(res.latencies) != 0 || !strings.Contains(res.firstError, "401") || bad.Load() != 150 {
		t.Fatalf("errors %d, measured %d, first error %q, refused %d; want 150 failures seen as 401", res.errors, len(res.latencies), res.firstError, bad.Load())
	}
}

func withHeader(cfg loadConfig, h string) loadConfig {
	cfg.headers = append(cfg.headers, h)
	return cfg
}

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"time"

	"github.com/spf13/cobra"

	"github.com/mercato-shop/mercato/bench/load"
	"github.com/mercato-shop/mercato/shop"
)

func loadCmd() *cobra.Command {
	var (
		cfg      load.Config
		up       bool
		warm     time.Duration
		profile  string
		replicas map[string]int
	)
	cmd := &cobra.Command{
		Use:   "load",
		Short: "Place orders through the gateway and report confirmed orders/s and latency",
		Long: `Drive a shop through its gateway as customers would. First a baseline: catalog
reads for the same duration and concurrency. Then orders: each is timed from
its POST until GET /api/orders/{id} shows it CONFIRMED or CANCELLED.

With --up, a fresh shop is started in this process on a temporary data
directory, so one command measures from nothing. Results and the commands
used for the recorded ones are in bench/README.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			out := cmd.OutOrStdout()
			if up {
				data, err := os.MkdirTemp("", "mercato-load-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(data)
				s, err := shop.Start(ctx, shop.Config{Addr: "127.0.0.1:0", DataDir: data, LogOutput: io.Discard, Replicas: replicas, NoRateLimits: true})
				if err != nil {
					return err
				}
				defer s.Stop(context.WithoutCancel(ctx))
				cfg.BaseURL = "http://" + s.GatewayAddr()
			}
			setup, err := load.Prepare(ctx, cfg)
			if err != nil {
				return err
			}
			if warm > 0 {
				w := cfg
				w.Duration = warm
				setup.Orders(ctx, w)
			}
			if profile != "" {
				stop, err := startProfile(profile)
				if err != nil {
					return err
				}
				defer stop()
			}
			fmt.Fprintf(out, "gateway %s, concurrency %d, %s each, %d customers\n", cfg.BaseURL, cfg.Concurrency, cfg.Duration, cfg.Customers)
			base := setup.Catalog(ctx, cfg)
			fmt.Fprintln(out, base)
			orders := setup.Orders(ctx, cfg)
			fmt.Fprintln(out, orders)
			if base.Rate() > 0 {
				fmt.Fprintf(out, "orders/s per catalog read/s: %.3f\n", orders.Rate()/base.Rate())
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.BaseURL, "url", "http://localhost:8080", "the gateway of the shop to drive")
	f.BoolVar(&up, "up", false, "start a fresh shop in this process instead of using --url")
	f.IntVar(&cfg.Concurrency, "concurrency", 32, "workers placing orders at once")
	f.DurationVar(&cfg.Duration, "duration", 20*time.Second, "how long each measurement runs")
	f.DurationVar(&warm, "warmup", 3*time.Second, "orders placed before measuring, not counted")
	f.IntVar(&cfg.Customers, "customers", 8, "customer accounts the workers share")
	f.StringVar(&cfg.Token, "token", "tok_ok", "payment token: tok_ok pays, tok_decline is declined")
	f.DurationVar(&cfg.Poll, "poll", 5*time.Millisecond, "how often a worker checks its order's status")
	f.StringToIntVar(&replicas, "replicas", nil, "with --up: instances per service, as payment=3")
	f.StringVar(&profile, "cpuprofile", "", "write a CPU profile of the measured runs to this file (with --up it covers the shop too)")
	return cmd
}

// startProfile writes a CPU profile to path until the returned stop is called.
func startProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/mercato-shop/mercato/platform/telemetry"
	"github.com/mercato-shop/mercato/shop"
)

// upConfig is everything `mercato up` reads: flags, and the environment for
// secrets. Nothing below cmd/ reads either.
type upConfig struct {
	addr          string
	data          string
	routes        string
	logLevel      slog.Level
	saga          string
	shipAfter     time.Duration
	replicas      map[string]int
	adminPassword string
	rateLimits    bool
	canary        []string
}

func upCmd() *cobra.Command {
	var cfg upConfig
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start the whole shop in one process (embedded broker, one SQLite database per service)",
		Long: `Start every service in one process. The gateway listens on --addr; the broker
and the services bind loopback ports the kernel picks and find each other
through discovery. All state lives under --data.

The admin account is admin@mercato.local. Its password comes from
MERCATO_ADMIN_PASSWORD; when that is unset, the first start generates one and
prints it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.adminPassword = os.Getenv("MERCATO_ADMIN_PASSWORD")
			return up(cmd, cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.addr, "addr", ":8080", "gateway listen address")
	f.StringVar(&cfg.data, "data", "mercato-data", "directory for all state (broker store, databases)")
	f.StringVar(&cfg.routes, "routes", "", "gateway route file, put in force again whenever it changes (default: the built-in deploy/gateway/routes.yaml)")
	f.TextVar(&cfg.logLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn, error")
	f.StringVar(&cfg.saga, "saga", "orchestrated", "saga mode of orders that name none: orchestrated or choreographed")
	f.DurationVar(&cfg.shipAfter, "ship-after", 10*time.Second, "how long after its confirmation an order ships")
	f.StringToIntVar(&cfg.replicas, "replicas", nil, "instances per service, as payment=3,inventory=2 (customer, inventory, order, payment)")
	f.StringSliceVar(&cfg.canary, "canary", nil, "services whose last replica announces version canary (the others: stable), for a route's split")
	f.BoolVar(&cfg.rateLimits, "rate-limits", true, "apply the gateway's rate limits; --rate-limits=false for a load generator")
	return cmd
}

func up(cmd *cobra.Command, cfg upConfig) error {
	data, err := filepath.Abs(cfg.data)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	// Records go out in batches; one at Warn or above goes at once.
	logs := telemetry.NewBuffered(cmd.ErrOrStderr(), 64<<10, 200*time.Millisecond)
	defer logs.Close()
	return shop.Run(cmd.Context(), shop.Config{
		Addr:          cfg.addr,
		DataDir:       data,
		AdminPassword: cfg.adminPassword,
		RoutesFile:    cfg.routes,
		LogOutput:     logs,
		LogLevel:      cfg.logLevel,
		DefaultSaga:   cfg.saga,
		ShipAfter:     cfg.shipAfter,
		Replicas:      cfg.replicas,
		NoRateLimits:  !cfg.rateLimits,
		Canary:        cfg.canary,
	}, func(s *shop.Shop) { announce(out, s, data) })
}

func announce(w io.Writer, s *shop.Shop, data string) {
	_, port, _ := net.SplitHostPort(s.GatewayAddr())
	base := "http://localhost:" + port
	fmt.Fprintf(w, "\nmercato is up: %s\n", base)
	fmt.Fprintf(w, "  catalog:  curl %s/api/products\n", base)
	fmt.Fprintf(w, "  data:     %s\n", data)
	if pw := s.AdminPassword(); pw != "" {
		fmt.Fprintf(w, "  admin:    admin@mercato.local / %s  (generated now; set MERCATO_ADMIN_PASSWORD to choose)\n", pw)
	} else {
		fmt.Fprintf(w, "  admin:    admin@mercato.local (password from MERCATO_ADMIN_PASSWORD or the first start)\n")
	}
	fmt.Fprintf(w, "  stop:     Ctrl-C\n\n")
}

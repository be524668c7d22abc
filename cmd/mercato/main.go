// Command mercato runs the mercato shop: `mercato up` starts every service
// in one process with an embedded broker and databases.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "mercato:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return rootCmd().ExecuteContext(ctx)
}

func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "mercato",
		Short:         "mercato: a reference microservices shop",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(upCmd(), loadCmd(), projectionsCmd(), chaosCmd())
	return root
}

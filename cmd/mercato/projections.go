package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// adminEmail is the admin account every shop has.
const adminEmail = "admin@mercato.local"

// adminConfig is what the admin commands read: flags, and the environment
// for the password.
type adminConfig struct {
	url      string
	password string
}

func projectionsCmd() *cobra.Command {
	var cfg adminConfig
	cmd := &cobra.Command{
		Use:   "projections",
		Short: "Watch and rebuild the read models of a running shop",
		Long: `Talk to the admin API of a running shop through its gateway, as the admin
account (admin@mercato.local, password from MERCATO_ADMIN_PASSWORD).

The read models (orderview: the order list; analytics: the statistics) are
built from the event streams; each keeps a checkpoint per stream.`,
	}
	cfg.register(cmd)

	list := &cobra.Command{
		Use:   "list",
		Short: "Show where each projection stands: state, generation, checkpoint and lag per stream",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loginAdmin(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			var out struct {
				Projections []projectionStatus `json:"projections"`
			}
			if err := c.call(cmd.Context(), http.MethodGet, "/admin/projections", http.StatusOK, &out); err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "PROJECTION\tSTATE\tGENERATION\tSTREAMS (checkpoint/last)")
			for _, p := range out.Projections {
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\n", p.Name, p.State, p.Generation, p.streams())
			}
			return w.Flush()
		},
	}

	var (
		wait    bool
		timeout time.Duration
	)
	rebuild := &cobra.Command{
		Use:   "rebuild NAME",
		Short: "Drop a read model and replay its streams from the start (orderview or analytics)",
		Long: `Drop a read model and replay its streams from the start. The shop answers at
once and replays in the background; with --wait, this command follows the
replay until the projection is live again.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			name := args[0]
			c, err := loginAdmin(ctx, cfg)
			if err != nil {
				return err
			}
			var st projectionStatus
			if err := c.call(ctx, http.MethodPost, "/admin/projections/"+url.PathEscape(name)+"/rebuild", http.StatusAccepted, &st); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "%s: dropped, replaying from the start (generation %d, %s)\n", st.Name, st.Generation, st.State)
			if !wait {
				return nil
			}
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			for st.State != "live" {
				select {
				case <-ctx.Done():
					return fmt.Errorf("%s is still %s: %s: %w", st.Name, st.State, st.streams(), ctx.Err())
				case <-time.After(200 * time.Millisecond):
				}
				if err := c.call(ctx, http.MethodGet, "/admin/projections/"+url.PathEscape(name), http.StatusOK, &st); err != nil {
					return err
				}
			}
			fmt.Fprintf(out, "%s: live at generation %d: %s\n", st.Name, st.Generation, st.streams())
			return nil
		},
	}
	rebuild.Flags().BoolVar(&wait, "wait", false, "wait until the projection is live again")
	rebuild.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "how long --wait waits")

	cmd.AddCommand(list, rebuild)
	return cmd
}

type projectionStatus struct {
	Name       string `json:"name"`
	State      string `json:"state"`
	Generation int64  `json:"generation"`
	Streams    []struct {
		Stream       string `json:"stream"`
		Checkpoint   uint64 `json:"checkpoint"`
		LastSequence uint64 `json:"last_sequence"`
	} `json:"streams"`
}

func (p projectionStatus) streams() string {
	parts := make([]string, len(p.Streams))
	for i, s := range p.Streams {
		parts[i] = fmt.Sprintf("%s %d/%d", s.Stream, s.Checkpoint, s.LastSequence)
	}
	return strings.Join(parts, ", ")
}

// register adds --url to cmd and its subcommands, and reads the admin
// password from the environment before any of them runs.
func (cfg *adminConfig) register(cmd *cobra.Command) {
	cmd.PersistentFlags().StringVar(&cfg.url, "url", "http://localhost:8080", "the gateway of the shop")
	cmd.PersistentPreRunE = func(*cobra.Command, []string) error {
		cfg.password = os.Getenv("MERCATO_ADMIN_PASSWORD")
		if cfg.password == "" {
			return errors.New("set MERCATO_ADMIN_PASSWORD to the admin account's password")
		}
		return nil
	}
}

// adminClient calls the gateway with the admin's access token.
type adminClient struct {
	base  string
	token string
	http  *http.Client
}

func loginAdmin(ctx context.Context, cfg adminConfig) (*adminClient, error) {
	c := &adminClient{base: strings.TrimRight(cfg.url, "/"), http: &http.Client{Timeout: 30 * time.Second}}
	body, _ := json.Marshal(map[string]string{"email": adminEmail, "password": cfg.password})
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := c.send(ctx, http.MethodPost, "/api/auth/login", body, http.StatusOK, &tok); err != nil {
		return nil, fmt.Errorf("log in as %s: %w", adminEmail, err)
	}
	c.token = tok.AccessToken
	return c, nil
}

func (c *adminClient) call(ctx context.Context, method, path string, want int, out any) error {
	return c.send(ctx, method, path, nil, want, out)
}

// send makes one request and decodes the answer into out, or turns a
// problem+json answer into an error that says what the shop said.
func (c *adminClient) send(ctx context.Context, method, path string, body []byte, want int, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode != want {
		var p struct {
			Title  string `json:"title"`
			Detail string `json:"detail"`
		}
		if json.Unmarshal(raw, &p) == nil && p.Title != "" {
			if p.Detail != "" {
				return fmt.Errorf("%s %s: %d %s: %s", method, path, resp.StatusCode, p.Title, p.Detail)
			}
			return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, p.Title)
		}
		return fmt.Errorf("%s %s: status %d", method, path, resp.StatusCode)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s %s: decode the answer: %w", method, path, err)
	}
	return nil
}

package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func chaosCmd() *cobra.Command {
	var cfg adminConfig
	cmd := &cobra.Command{
		Use:   "chaos",
		Short: "Make an instance of a running shop fail, slow down or die",
		Long: `Flip the fault switches of one service instance of a running shop, through
its gateway's admin API, as the admin account (admin@mercato.local, password
from MERCATO_ADMIN_PASSWORD). INSTANCE is an instance id from
'mercato chaos list', or "any" for the first instance of the service.
SERVICE may also be paysim, the simulated payment provider: its error rate
fails charges and refunds, its latency delays every call.

  mercato chaos list
  mercato chaos set inventory any --error-rate 0.5 --latency 200ms
  mercato chaos set inventory any                 # switches off
  mercato chaos set paysim any --error-rate 1     # the payment provider fails
  mercato chaos kill payment any                  # as a crash: no goodbye`,
	}
	cfg.register(cmd)

	list := &cobra.Command{
		Use:   "list",
		Short: "Show every service instance: address, readiness, calls and failures seen by the gateway",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loginAdmin(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			services, err := instances(cmd, c)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "SERVICE\tINSTANCE\tADDRESS\tREADY\tCALLS\tFAILURES")
			for _, s := range services {
				for _, i := range s.Instances {
					fmt.Fprintf(w, "%s\t%s\t%s\t%v\t%d\t%d\n", s.Name, i.Instance.ID, i.Instance.Addr, i.Ready, i.Calls, i.Failures)
				}
			}
			return w.Flush()
		},
	}

	var (
		errorRate float64
		latency   time.Duration
	)
	set := &cobra.Command{
		Use:   "set SERVICE INSTANCE",
		Short: "Set an instance's error rate and added latency (both off when not given)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, id, err := instanceOf(cmd, cfg, args[0], args[1])
			if err != nil {
				return err
			}
			body, _ := json.Marshal(map[string]any{"error_rate": errorRate, "latency": latency.String()})
			var now struct {
				ErrorRate float64 `json:"error_rate"`
				Latency   string  `json:"latency"`
			}
			if err := c.send(cmd.Context(), http.MethodPut, chaosPath(args[0], id), body, http.StatusOK, &now); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s: error rate %g, latency %s\n", args[0], id, now.ErrorRate, now.Latency)
			return nil
		},
	}
	set.Flags().Float64Var(&errorRate, "error-rate", 0, "share of requests answered 503, from 0 to 1")
	set.Flags().DurationVar(&latency, "latency", 0, "latency added to every request")

	kill := &cobra.Command{
		Use:   "kill SERVICE INSTANCE",
		Short: "Kill an instance: it stops heartbeating and its listener closes",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, id, err := instanceOf(cmd, cfg, args[0], args[1])
			if err != nil {
				return err
			}
			var out map[string]string
			if err := c.send(cmd.Context(), http.MethodPost, chaosPath(args[0], id)+"/kill", nil, http.StatusAccepted, &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s: killed; it leaves discovery within the registry's TTL\n", args[0], id)
			return nil
		},
	}
	cmd.AddCommand(list, set, kill)
	return cmd
}

type serviceInstances struct {
	Name      string `json:"name"`
	Instances []struct {
		Instance struct {
			ID   string `json:"id"`
			Addr string `json:"addr"`
		} `json:"instance"`
		Ready    bool   `json:"ready"`
		Calls    uint64 `json:"calls"`
		Failures uint64 `json:"failures"`
	} `json:"instances"`
}

func instances(cmd *cobra.Command, c *adminClient) ([]serviceInstances, error) {
	var out struct {
		Services []serviceInstances `json:"services"`
	}
	if err := c.call(cmd.Context(), http.MethodGet, "/admin/services", http.StatusOK, &out); err != nil {
		return nil, err
	}
	return out.Services, nil
}

// instanceOf logs in and checks that instance is a live instance of
// service, or picks the first one for "any".
func instanceOf(cmd *cobra.Command, cfg adminConfig, service, instance string) (*adminClient, string, error) {
	c, err := loginAdmin(cmd.Context(), cfg)
	if err != nil {
		return nil, "", err
	}
	services, err := instances(cmd, c)
	if err != nil {
		return nil, "", err
	}
	i := slices.IndexFunc(services, func(s serviceInstances) bool { return s.Name == service })
	if i < 0 || len(services[i].Instances) == 0 {
		return nil, "", fmt.Errorf("no live instance of %q", service)
	}
	for _, inst := range services[i].Instances {
		if instance == "any" || inst.Instance.ID == instance {
			return c, inst.Instance.ID, nil
		}
	}
	return nil, "", fmt.Errorf("%q is not a live instance of %s (see mercato chaos list)", instance, service)
}

func chaosPath(service, id string) string {
	return "/admin/chaos/" + url.PathEscape(service) + "/" + url.PathEscape(id)
}

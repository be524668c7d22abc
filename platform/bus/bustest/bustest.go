// Package bustest runs bus tests on every broker they must pass on: the
// embedded server always, and the external server named by MERCATO_TEST_NATS.
package bustest

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/mercato-shop/mercato/platform/bus"
)

// EnvURL names the external NATS server to test on.
const EnvURL = "MERCATO_TEST_NATS"

// Target is a broker to test on.
type Target struct {
	Name string
	URL  string
}

// Targets returns the brokers to test on: "embedded", a server with a
// temporary store shut down at cleanup, and "external" when MERCATO_TEST_NATS
// is set. Unset, the external target fails the test under CI=true and is
// left out otherwise; set but unreachable, it fails the test.
func Targets(t testing.TB) []Target {
	t.Helper()
	targets := []Target{{Name: "embedded", URL: embedded(t)}}
	if url, ok := external(t); ok {
		targets = append(targets, Target{Name: "external", URL: url})
	}
	return targets
}

// Each runs fn as a subtest per target; without MERCATO_TEST_NATS the
// "external" subtest is reported as skipped.
func Each(t *testing.T, fn func(t *testing.T, target Target)) {
	t.Helper()
	targets := Targets(t)
	for _, target := range targets {
		t.Run(target.Name, func(t *testing.T) { fn(t, target) })
	}
	if len(targets) == 1 {
		t.Run("external", func(t *testing.T) { t.Skipf("%s is not set", EnvURL) })
	}
}

// Unique returns prefix followed by a random suffix, for stream, consumer
// and subject names: the external server is shared between tests and runs.
// The result is a valid stream name and subject token.
func Unique(prefix string) string {
	return prefix + strings.ReplaceAll(uuid.NewString(), "-", "")
}

func embedded(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := bus.StartServer(ctx, bus.ServerConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("start embedded nats: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	return srv.ClientURL()
}

func external(t testing.TB) (string, bool) {
	t.Helper()
	url := os.Getenv(EnvURL)
	if url == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s must name a NATS server under CI", EnvURL)
		}
		return "", false
	}
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("%s=%s is unreachable: %v", EnvURL, url, err)
	}
	nc.Close()
	return url, true
}

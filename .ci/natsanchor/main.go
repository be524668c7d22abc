// Command natsanchor keeps one stream on the shared test NATS server, so
// that the server's stream directory is never removed while parallel test
// packages create and delete their streams (nats-server 2.9 can then fail a
// create with "could not create storage directory").
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "natsanchor:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := nats.Connect(os.Getenv("MERCATO_TEST_NATS"))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	_, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "MERCATO_TEST_ANCHOR", Subjects: []string{"mercato-test-anchor"}})
	return err
}

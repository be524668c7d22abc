package inventory_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	inventoryv1 "github.com/mercato-shop/mercato/api/gen/inventory/v1"
	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/platform/telemetry"
	"github.com/mercato-shop/mercato/services/inventory"
)

type product struct {
	ID        string `json:"id"`
	SKU       string `json:"sku"`
	Available int64  `json:"available"`
}

// The service end to end on a real broker: a reserve command on its queue is
// answered once on inventory.reserved, even when the command is delivered
// again, and the catalog shows the stock taken.
func TestService_AnswersReserveCommandsOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := bus.StartServer(ctx, bus.ServerConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)

	svc := inventory.New(inventory.Config{
		DSN:    storage.SQLiteDSN(t.TempDir(), "inventory"),
		BusURL: srv.ClientURL(),
		Seed:   true,
	}, slog.New(slog.DiscardHandler), telemetry.NewTracerProvider("inventory"))
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop(context.Background()) })

	catalog := func() map[string]product {
		resp, err := http.Get("http://" + svc.Addr() + "/api/products")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var ps []product
		if err := json.NewDecoder(resp.Body).Decode(&ps); err != nil {
			t.Fatal(err)
		}
		out := map[string]product{}
		for _, p := range ps {
			out[p.SKU] = p
		}
		return out
	}
	mug := catalog()["MUG-001"]

	client, err := bus.Connect(ctx, bus.Config{URL: srv.ClientURL(), Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	got := make(chan *inventoryv1.StockReserved, 4)
	sub, err := client.Subscribe(ctx, bus.Consumer{Stream: "INVENTORY", Durable: "test-reserved"}, bus.Handlers{
		"inventory.reserved": bus.On(func(_ context.Context, _ bus.Message, ev *inventoryv1.StockReserved) error {
			got <- ev
			return nil
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Stop)

	cmd := &inventoryv1.ReserveStock{OrderId: "order-1", Lines: []*inventoryv1.Line{{ProductId: mug.ID, Quantity: 3}}}
	for range 2 { // the second is a redelivery with a new message id
		if err := client.Publish(ctx, bus.Event{Type: "inventory.cmd.reserve", Subject: "order-1", Data: cmd}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case ev := <-got:
		if ev.GetOrderId() != "order-1" || len(ev.GetLines()) != 1 || ev.GetLines()[0].GetQuantity() != 3 {
			t.Fatalf("event %v", ev)
		}
	case <-ctx.Done():
		t.Fatal("no inventory.reserved")
	}

	// Both commands are consumed; the queue is empty and one answer was stored.
	js := client.JetStream()
	deadline := time.Now().Add(10 * time.Second)
	for {
		q, err := js.Stream(ctx, "INVENTORY_COMMANDS")
		if err != nil {
			t.Fatal(err)
		}
		if q.CachedInfo().State.Msgs == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d commands left in the queue", q.CachedInfo().State.Msgs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	events, err := js.Stream(ctx, "INVENTORY")
	if err != nil {
		t.Fatal(err)
	}
	info, err := events.Info(ctx, jetstream.WithSubjectFilter("inventory.reserved"))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Subjects["inventory.reserved"]; n != 1 {
		t.Fatalf("%d inventory.reserved events stored, want 1", n)
	}
	if after := catalog()["MUG-001"].Available; after != mug.Available-3 {
		t.Fatalf("available %d, want %d", after, mug.Available-3)
	}
}

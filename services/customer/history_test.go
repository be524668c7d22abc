package customer_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	moneyv1 "github.com/mercato-shop/mercato/api/gen/money/v1"
	orderv1 "github.com/mercato-shop/mercato/api/gen/order/v1"
	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/platform/telemetry"
	"github.com/mercato-shop/mercato/platform/web"
	"github.com/mercato-shop/mercato/services/customer"
)

type meJSON struct {
	ID           string `json:"id"`
	RecentOrders []struct {
		ID     string `json:"id"`
		Status string `json:"status"`
		Reason string `json:"reason"`
		Total  struct {
			Amount   int64  `json:"amount"`
			Currency string `json:"currency"`
		} `json:"total"`
		ItemCount int64     `json:"item_count"`
		CreatedAt time.Time `json:"created_at"`
		UpdatedAt time.Time `json:"updated_at"`
	} `json:"recent_orders"`
}

// getMe is GET /api/customers/me as the gateway forwards it for subject.
func getMe(t *testing.T, addr, subject string) (meJSON, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/api/customers/me", nil)
	req.Header.Set(web.SubjectHeader, subject)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/customers/me: %d %s", resp.StatusCode, body)
	}
	var me meJSON
	if err := json.Unmarshal(body, &me); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return me, string(body)
}

// The service consumes the order context's events into each customer's
// history, shown by GET /api/customers/me: out of order, repeated, before
// order.created, and with order.shipped, which the test publishes as the
// order context will.
func TestService_KeepsTheOrderHistoryFromOrderEvents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := bus.StartServer(ctx, bus.ServerConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	// Started before the order context has declared its stream, as in
	// `mercato up`: the consumer waits for it.
	svc := customer.New(customer.Config{
		DSN:           storage.SQLiteDSN(t.TempDir(), "customer"),
		BusURL:        srv.ClientURL(),
		Issuer:        "mercato",
		Audience:      "mercato",
		AdminPassword: "admin password",
	}, slog.New(slog.DiscardHandler), telemetry.NewTracerProvider("customer"))
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop(context.Background()) })

	ann := register(t, svc.Addr(), "ann@example.com")
	bob := register(t, svc.Addr(), "bob@example.com")
	if _, raw := getMe(t, svc.Addr(), ann); !strings.Contains(raw, `"recent_orders":[]`) {
		t.Fatalf("without orders: %s, want an empty recent_orders list", raw)
	}

	orders, err := bus.Connect(ctx, bus.Config{URL: srv.ClientURL(), Source: "order"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(orders.Close)
	if err := orders.EnsureStream(ctx, bus.Stream{Name: "ORDER", Subjects: []string{"order.>"}}); err != nil {
		t.Fatal(err)
	}
	// Each publish has a new event id, so repeats reach the consumer
	// instead of being dropped by the broker.
	publish := func(typ string, data interface {
		proto.Message
		GetOrderId() string
	}) {
		t.Helper()
		if err := orders.Publish(ctx, bus.Event{Type: typ, Subject: data.GetOrderId(), Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	base := time.Now().UTC().Add(-time.Hour).Truncate(time.Microsecond)
	at := func(minutes int) *timestamppb.Timestamp {
		return timestamppb.New(base.Add(time.Duration(minutes) * time.Minute))
	}
	eur := func(amount int64) *moneyv1.Money { return &moneyv1.Money{Amount: amount, Currency: "EUR"} }
	line := func(qty int32) *orderv1.OrderLine {
		return &orderv1.OrderLine{ProductId: uuid.NewString(), Name: "Mug", Quantity: qty, UnitPrice: eur(1450)}
	}
	shipped, declined, cancelled, bobs := uuid.Must(uuid.NewV7()).String(), uuid.Must(uuid.NewV7()).String(),
		uuid.Must(uuid.NewV7()).String(), uuid.Must(uuid.NewV7()).String()

	// Shipped, each event twice, the later ones first.
	for range 2 {
		publish("order.shipped", &orderv1.OrderShipped{OrderId: shipped, CustomerId: ann, ShipmentId: "s1", TrackingNumber: "T1", ShippedAt: at(2), Version: 3})
		publish("order.confirmed", &orderv1.OrderConfirmed{OrderId: shipped, CustomerId: ann, ConfirmedAt: at(1), Version: 2})
		publish("order.created", &orderv1.OrderCreated{OrderId: shipped, CustomerId: ann, Items: []*orderv1.OrderLine{line(2), line(1)}, Total: eur(4350), CreatedAt: at(0), Version: 1})
	}
	// Declined, heard of before order.created.
	publish("order.cancelled", &orderv1.OrderCancelled{OrderId: declined, CustomerId: ann, Reason: "payment_declined", CancelledAt: at(11), Version: 2})
	publish("order.created", &orderv1.OrderCreated{OrderId: declined, CustomerId: ann, Items: []*orderv1.OrderLine{line(1)}, Total: eur(1450), CreatedAt: at(10), Version: 1})
	// Confirmed, then cancelled by the customer; the confirmation comes again late.
	publish("order.created", &orderv1.OrderCreated{OrderId: cancelled, CustomerId: ann, Items: []*orderv1.OrderLine{line(5)}, Total: eur(7250), CreatedAt: at(20), Version: 1})
	publish("order.confirmed", &orderv1.OrderConfirmed{OrderId: cancelled, CustomerId: ann, ConfirmedAt: at(21), Version: 2})
	publish("order.cancelled", &orderv1.OrderCancelled{OrderId: cancelled, CustomerId: ann, Reason: "customer_cancelled", CancelledAt: at(22), Version: 3})
	publish("order.confirmed", &orderv1.OrderConfirmed{OrderId: cancelled, CustomerId: ann, ConfirmedAt: at(21), Version: 2})
	// Another customer's order, and one that names no customer (poison).
	publish("order.created", &orderv1.OrderCreated{OrderId: bobs, CustomerId: bob, Items: []*orderv1.OrderLine{line(1)}, Total: eur(1450), CreatedAt: at(30), Version: 1})
	poison := uuid.Must(uuid.NewV7()).String()
	publish("order.created", &orderv1.OrderCreated{OrderId: poison, Items: []*orderv1.OrderLine{line(1)}, Total: eur(1450), CreatedAt: at(40), Version: 1})

	// Once every delivery is acked (the poison one dead-lettered), the
	// history is as the newest events left it.
	stream, err := orders.JetStream().Stream(ctx, "ORDER")
	if err != nil {
		t.Fatal(err)
	}
	last := stream.CachedInfo().State.LastSeq
	// The ack floor, not the pending counts: those can read zero on a
	// consumer that has not yet counted what was published.
	waitFor(t, "the history consumer to handle every event", func() bool {
		c, err := orders.JetStream().Consumer(ctx, "ORDER", "customer-history")
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.AckFloor.Stream >= last && info.NumAckPending == 0
	})
	type row struct {
		id, status, reason string
		amount, items      int64
		created, updated   int
	}
	want := []row{
		{cancelled, "CANCELLED", "customer_cancelled", 7250, 5, 20, 22},
		{declined, "CANCELLED", "payment_declined", 1450, 1, 10, 11},
		{shipped, "SHIPPED", "", 4350, 3, 0, 2},
	}
	me, raw := getMe(t, svc.Addr(), ann)
	var got []row
	for _, o := range me.RecentOrders {
		if o.Total.Currency != "EUR" {
			t.Fatalf("order %s in %q: %s", o.ID, o.Total.Currency, raw)
		}
		got = append(got, row{o.ID, o.Status, o.Reason, o.Total.Amount, o.ItemCount,
			int(o.CreatedAt.Sub(base) / time.Minute), int(o.UpdatedAt.Sub(base) / time.Minute)})
		if o.CreatedAt.Sub(base)%time.Minute != 0 || o.UpdatedAt.Sub(base)%time.Minute != 0 {
			t.Fatalf("order %s times are not the events' own: %s", o.ID, raw)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("ann's recent orders\n%+v\nwant\n%+v", got, want)
	}
	if strings.Contains(raw, `"reason":""`) {
		t.Fatalf("an empty reason is shown: %s", raw)
	}
	if me, _ := getMe(t, svc.Addr(), bob); len(me.RecentOrders) != 1 || me.RecentOrders[0].ID != bobs {
		t.Fatalf("bob's recent orders %+v", me.RecentOrders)
	}
	dls, err := orders.DeadLetters("DEADLETTER").List(ctx, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 || dls[0].CESubject != poison {
		t.Fatalf("dead letters %+v, want the order.created without a customer", dls)
	}
}

// register opens an account and returns its id.
func register(t *testing.T, addr, email string) string {
	t.Helper()
	resp, err := http.Post("http://"+addr+"/api/customers", "application/json",
		strings.NewReader(`{"email":"`+email+`","name":"A customer","password":"correct horse"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var c struct {
		ID string `json:"id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("register %s: %d %v", email, resp.StatusCode, err)
	}
	return c.ID
}

// waitFor polls cond until it holds, failing the test after a deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

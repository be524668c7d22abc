package payment_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	moneyv1 "github.com/mercato-shop/mercato/api/gen/money/v1"
	paymentv1 "github.com/mercato-shop/mercato/api/gen/payment/v1"
	"github.com/mercato-shop/mercato/api/gen/payment/v1/paymentv1connect"
	"github.com/mercato-shop/mercato/external/paysim"
	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/platform/telemetry"
	"github.com/mercato-shop/mercato/platform/web"
	"github.com/mercato-shop/mercato/services/payment"
)

// env is one payment service on a real embedded broker, talking to a real
// paysim over HTTP, with a client that sends commands and records answers.
type env struct {
	ctx    context.Context
	svc    *payment.Service
	sim    *paysim.Simulator
	client *bus.Bus

	mu     sync.Mutex
	events map[string]proto.Message // by type + "/" + order id, the last one
}

func start(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	srv, err := bus.StartServer(ctx, bus.ServerConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)

	sim := paysim.New(paysim.Config{})
	if err := sim.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Stop(context.Background()) })

	svc := payment.New(payment.Config{
		DSN:             storage.SQLiteDSN(t.TempDir(), "payment"),
		BusURL:          srv.ClientURL(),
		ProviderURL:     sim.URL(),
		ProviderTimeout: 2 * time.Second,
	}, slog.New(slog.DiscardHandler), telemetry.NewTracerProvider("payment"))
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop(context.Background()) })

	client, err := bus.Connect(ctx, bus.Config{URL: srv.ClientURL(), Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	e := &env{ctx: ctx, svc: svc, sim: sim, client: client, events: map[string]proto.Message{}}
	record := func(order string, m proto.Message, typ string) {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.events[typ+"/"+order] = m
	}
	sub, err := client.Subscribe(ctx, bus.Consumer{Stream: "PAYMENT", Durable: "test-answers"}, bus.Handlers{
		"payment.completed": bus.On(func(_ context.Context, m bus.Message, ev *paymentv1.PaymentCompleted) error {
			record(m.Subject, ev, m.Type)
			return nil
		}),
		"payment.failed": bus.On(func(_ context.Context, m bus.Message, ev *paymentv1.PaymentFailed) error {
			record(m.Subject, ev, m.Type)
			return nil
		}),
		"payment.refunded": bus.On(func(_ context.Context, m bus.Message, ev *paymentv1.PaymentRefunded) error {
			record(m.Subject, ev, m.Type)
			return nil
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Stop)
	return e
}

func (e *env) send(t *testing.T, typ, orderID string, cmd proto.Message) {
	t.Helper()
	if err := e.client.Publish(e.ctx, bus.Event{Type: typ, Subject: orderID, Data: cmd}); err != nil {
		t.Fatal(err)
	}
}

func (e *env) charge(t *testing.T, orderID, customerID, token string) {
	t.Helper()
	e.send(t, "payment.cmd.charge", orderID, &paymentv1.ChargePayment{
		OrderId: orderID, CustomerId: customerID, PaymentToken: token,
		Amount: &moneyv1.Money{Amount: 4999, Currency: "EUR"},
	})
}

func (e *env) refund(t *testing.T, orderID string) {
	t.Helper()
	e.send(t, "payment.cmd.refund", orderID, &paymentv1.RefundPayment{OrderId: orderID, Reason: "customer_cancelled"})
}

func (e *env) answer(typ, orderID string) proto.Message {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.events[typ+"/"+orderID]
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// await waits for the answer typ about orderID.
func await[T proto.Message](t *testing.T, e *env, typ, orderID string) T {
	t.Helper()
	waitFor(t, typ+" of "+orderID, func() bool { return e.answer(typ, orderID) != nil })
	return e.answer(typ, orderID).(T)
}

// stored counts the events of type typ the broker keeps.
func (e *env) stored(t *testing.T, typ string) uint64 {
	t.Helper()
	s, err := e.client.JetStream().Stream(e.ctx, "PAYMENT")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(e.ctx, jetstream.WithSubjectFilter(typ))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[typ]
}

// queue reports the commands waiting in the payment-processing queue and
// the deliveries the service's consumer has made so far.
func (e *env) queue(t *testing.T) (waiting, delivered uint64) {
	t.Helper()
	s, err := e.client.JetStream().Stream(e.ctx, "PAYMENT_PROCESSING")
	if err != nil {
		t.Fatal(err)
	}
	c, err := e.client.JetStream().Consumer(e.ctx, "PAYMENT_PROCESSING", "payment-processing")
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.Msgs, info.Delivered.Consumer
}

func (e *env) rpc() paymentv1connect.PaymentServiceClient {
	return paymentv1connect.NewPaymentServiceClient(http.DefaultClient, "http://"+e.svc.Addr())
}

func (e *env) status(t *testing.T, orderID string) string {
	t.Helper()
	resp, err := e.rpc().ListPayments(e.ctx, connect.NewRequest(&paymentv1.ListPaymentsRequest{OrderId: orderID}))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Msg.GetPayments()) != 1 {
		return ""
	}
	return resp.Msg.GetPayments()[0].GetStatus()
}

func TestService_ChargesOnceAndRefunds(t *testing.T) {
	e := start(t)
	order, customer := uuid.NewString(), uuid.NewString()
	for range 3 { // the same command, delivered three times
		e.charge(t, order, customer, paysim.TokenOK)
	}
	done := await[*paymentv1.PaymentCompleted](t, e, "payment.completed", order)
	if done.GetAmount().GetAmount() != 4999 || done.GetAmount().GetCurrency() != "EUR" || done.GetPaymentId() == "" {
		t.Fatalf("payment.completed %v", done)
	}
	waitFor(t, "an empty queue", func() bool { waiting, _ := e.queue(t); return waiting == 0 })
	if n := e.stored(t, "payment.completed"); n != 1 {
		t.Fatalf("%d payment.completed stored, want 1", n)
	}
	if n := e.sim.Captures(); n != 1 {
		t.Fatalf("%d captures at the provider, want 1", n)
	}

	got, err := e.rpc().GetPayment(e.ctx, connect.NewRequest(&paymentv1.GetPaymentRequest{Id: done.GetPaymentId()}))
	if err != nil || got.Msg.GetPayment().GetStatus() != "CAPTURED" || got.Msg.GetPayment().GetCustomerId() != customer {
		t.Fatalf("GetPayment: %v %v", got, err)
	}
	if _, err := e.rpc().GetPayment(e.ctx, connect.NewRequest(&paymentv1.GetPaymentRequest{Id: uuid.NewString()})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("GetPayment of an unknown id: %v", err)
	}

	for range 2 {
		e.refund(t, order)
	}
	refunded := await[*paymentv1.PaymentRefunded](t, e, "payment.refunded", order)
	if refunded.GetAmount().GetAmount() != 4999 || refunded.GetPaymentId() != done.GetPaymentId() {
		t.Fatalf("payment.refunded %v", refunded)
	}
	waitFor(t, "an empty queue", func() bool { waiting, _ := e.queue(t); return waiting == 0 })
	if n := e.sim.Refunds(); n != 1 {
		t.Fatalf("%d refunds at the provider, want 1", n)
	}
	if s := e.status(t, order); s != "REFUNDED" {
		t.Fatalf("status %s, want REFUNDED", s)
	}
}

func TestService_AnswersDeclines(t *testing.T) {
	e := start(t)
	order := uuid.NewString()
	e.charge(t, order, uuid.NewString(), paysim.TokenDecline)
	failed := await[*paymentv1.PaymentFailed](t, e, "payment.failed", order)
	if failed.GetReason() != "payment_declined" || failed.GetPaymentId() == "" {
		t.Fatalf("payment.failed %v", failed)
	}
	// An invalid command is answered too, so the saga does not wait.
	bad := uuid.NewString()
	e.charge(t, bad, uuid.NewString(), "")
	if f := await[*paymentv1.PaymentFailed](t, e, "payment.failed", bad); f.GetReason() != "invalid" {
		t.Fatalf("payment.failed %v", f)
	}
	if n := e.sim.Captures(); n != 0 {
		t.Fatalf("%d captures, want 0", n)
	}
}

func TestService_RetriesUntilTheProviderRecovers(t *testing.T) {
	e := start(t)
	order := uuid.NewString()
	e.sim.SetFailureRate(1)
	e.charge(t, order, uuid.NewString(), paysim.TokenOK)
	waitFor(t, "two retries", func() bool { _, delivered := e.queue(t); return delivered >= 3 })
	if e.answer("payment.completed", order) != nil || e.answer("payment.failed", order) != nil {
		t.Fatal("answered while the provider fails")
	}
	if s := e.status(t, order); s != "PENDING" {
		t.Fatalf("status %s while the provider fails, want PENDING", s)
	}

	e.sim.SetFailureRate(0)
	await[*paymentv1.PaymentCompleted](t, e, "payment.completed", order)
	if n := e.sim.Captures(); n != 1 {
		t.Fatalf("%d captures, want 1", n)
	}
}

func TestService_BrokenProviderGetsNoAnswer(t *testing.T) {
	e := start(t)
	order := uuid.NewString()
	e.charge(t, order, uuid.NewString(), paysim.TokenError)
	waitFor(t, "two retries", func() bool { _, delivered := e.queue(t); return delivered >= 3 })
	if e.answer("payment.completed", order) != nil || e.answer("payment.failed", order) != nil {
		t.Fatal("answered a charge the provider never settled")
	}
	if s := e.status(t, order); s != "PENDING" {
		t.Fatalf("status %s, want PENDING", s)
	}
}

func TestService_RefundBeforeChargeVoidsIt(t *testing.T) {
	e := start(t)
	order := uuid.NewString()
	e.refund(t, order)
	if r := await[*paymentv1.PaymentRefunded](t, e, "payment.refunded", order); r.GetAmount().GetAmount() != 0 {
		t.Fatalf("payment.refunded %v, want amount 0", r)
	}
	if s := e.status(t, order); s != "VOIDED" {
		t.Fatalf("status %s, want VOIDED", s)
	}
	e.charge(t, order, uuid.NewString(), paysim.TokenOK)
	if f := await[*paymentv1.PaymentFailed](t, e, "payment.failed", order); f.GetReason() != "voided" {
		t.Fatalf("payment.failed %v, want reason voided", f)
	}
	if n := e.sim.Captures(); n != 0 {
		t.Fatalf("%d captures, want 0", n)
	}
}

type paymentJSON struct {
	ID      string `json:"id"`
	OrderID string `json:"order_id"`
	Amount  struct {
		Amount   int64  `json:"amount"`
		Currency string `json:"currency"`
	} `json:"amount"`
	Status    string    `json:"status"`
	CreatedAt time.Time `json:"created_at"`
}

func TestService_ListsPaymentsOfTheCallersOrder(t *testing.T) {
	e := start(t)
	order, customer := uuid.NewString(), uuid.NewString()
	e.charge(t, order, customer, paysim.TokenOK)
	await[*paymentv1.PaymentCompleted](t, e, "payment.completed", order)

	get := func(query, subject, roles string) (int, []paymentJSON) {
		t.Helper()
		req, err := http.NewRequestWithContext(e.ctx, http.MethodGet, "http://"+e.svc.Addr()+"/api/payments"+query, nil)
		if err != nil {
			t.Fatal(err)
		}
		if subject != "" { // what the gateway sets after verifying the token
			req.Header.Set(web.SubjectHeader, subject)
			req.Header.Set(web.RolesHeader, roles)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out []paymentJSON
		if resp.StatusCode == http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out == nil {
				t.Fatalf("body: %v %v", out, err)
			}
		} else if ct := resp.Header.Get("Content-Type"); ct != web.ProblemContentType {
			t.Fatalf("%d with content type %q, want a problem", resp.StatusCode, ct)
		}
		return resp.StatusCode, out
	}

	code, own := get("?order_id="+order, customer, "customer")
	if code != http.StatusOK || len(own) != 1 || own[0].OrderID != order || own[0].Status != "CAPTURED" ||
		own[0].Amount.Amount != 4999 || own[0].Amount.Currency != "EUR" || own[0].ID == "" || own[0].CreatedAt.IsZero() {
		t.Fatalf("own order: %d %+v", code, own)
	}
	if code, other := get("?order_id="+order, uuid.NewString(), "customer"); code != http.StatusOK || len(other) != 0 {
		t.Fatalf("another customer's order: %d %+v, want []", code, other)
	}
	if code, admin := get("?order_id="+order, uuid.NewString(), "customer,admin"); code != http.StatusOK || len(admin) != 1 {
		t.Fatalf("admin: %d %+v", code, admin)
	}
	if code, none := get("?order_id="+uuid.NewString(), customer, "customer"); code != http.StatusOK || len(none) != 0 {
		t.Fatalf("order without payments: %d %+v", code, none)
	}
	if code, _ := get("?order_id="+order, "", ""); code != http.StatusUnauthorized {
		t.Fatalf("anonymous: %d, want 401", code)
	}
	for _, q := range []string{"", "?order_id=", "?order_id=not-a-uuid"} {
		if code, _ := get(q, customer, "customer"); code != http.StatusBadRequest {
			t.Fatalf("query %q: %d, want 400", q, code)
		}
	}
}

package customer_test

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	customerv1 "github.com/mercato-shop/mercato/api/gen/customer/v1"
	"github.com/mercato-shop/mercato/api/gen/customer/v1/customerv1connect"
	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/rpc"
	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/platform/telemetry"
	"github.com/mercato-shop/mercato/services/customer"
)

type delivery struct {
	msg     bus.Message
	ev      *customerv1.CustomerRegistered
	traceID trace.TraceID
}

// The service on a real broker and database: a registration is announced as
// customer.registered with CloudEvents headers, in the trace and under the
// correlation id of the request, and is readable over RPC.
func TestService_AnnouncesRegistrationsAndAnswersRPC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := bus.StartServer(ctx, bus.ServerConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
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

	client, err := bus.Connect(ctx, bus.Config{URL: srv.ClientURL(), Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	got := make(chan delivery, 1)
	sub, err := client.Subscribe(ctx, bus.Consumer{Stream: "CUSTOMER", Durable: "test"}, bus.Handlers{
		"customer.registered": bus.On(func(ctx context.Context, m bus.Message, ev *customerv1.CustomerRegistered) error {
			got <- delivery{m, ev, trace.SpanContextFromContext(ctx).TraceID()}
			return nil
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Stop)

	tp := telemetry.NewTracerProvider("test")
	reqCtx, span := tp.Tracer("test").Start(ctx, "client")
	defer span.End()
	req, _ := http.NewRequestWithContext(reqCtx, http.MethodPost, "http://"+svc.Addr()+"/api/customers",
		strings.NewReader(`{"email":"ann@example.com","name":"Ann","password":"correct horse"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(telemetry.CorrelationHeader, "corr-register")
	telemetry.Propagator().Inject(reqCtx, propagation.HeaderCarrier(req.Header))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("register: %d", resp.StatusCode)
	}

	var d delivery
	select {
	case d = <-got:
	case <-ctx.Done():
		t.Fatal("no customer.registered")
	}
	if d.ev.GetEmail() != "ann@example.com" || d.ev.GetName() != "Ann" || d.ev.GetCustomerId() == "" {
		t.Fatalf("event %v", d.ev)
	}
	if d.msg.Type != "customer.registered" || d.msg.Source != "customer" || d.msg.Subject != d.ev.GetCustomerId() || d.msg.ID == "" || d.msg.Time.IsZero() {
		t.Fatalf("cloudevents attributes %+v", d.msg)
	}
	if d.msg.Header.Get(telemetry.CorrelationHeader) != "corr-register" {
		t.Fatalf("correlation id %q", d.msg.Header.Get(telemetry.CorrelationHeader))
	}
	if d.traceID != span.SpanContext().TraceID() {
		t.Fatal("the event is not in the request's trace")
	}

	opts, err := rpc.ClientOptions(tp, 0)
	if err != nil {
		t.Fatal(err)
	}
	rpcClient := customerv1connect.NewCustomerServiceClient(http.DefaultClient, "http://"+svc.Addr(), opts...)
	out, err := rpcClient.GetCustomer(ctx, connect.NewRequest(&customerv1.GetCustomerRequest{Id: d.ev.GetCustomerId()}))
	if err != nil {
		t.Fatal(err)
	}
	if c := out.Msg.GetCustomer(); c.GetEmail() != "ann@example.com" || len(c.GetRoles()) != 1 || c.GetRoles()[0] != "customer" {
		t.Fatalf("GetCustomer: %v", c)
	}
	_, err = rpcClient.GetCustomer(ctx, connect.NewRequest(&customerv1.GetCustomerRequest{Id: "nobody"}))
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("unknown customer: %v", err)
	}
	_, err = rpcClient.GetCustomer(ctx, connect.NewRequest(&customerv1.GetCustomerRequest{}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("empty id: %v", err)
	}
}

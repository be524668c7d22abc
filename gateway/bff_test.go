package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	customerv1 "github.com/mercato-shop/mercato/api/gen/customer/v1"
	"github.com/mercato-shop/mercato/api/gen/customer/v1/customerv1connect"
	"github.com/mercato-shop/mercato/platform/discovery"
	"github.com/mercato-shop/mercato/platform/telemetry"
	"github.com/mercato-shop/mercato/platform/web"
)

// bffRoutes routes the BFF endpoints to the gateway itself, as
// deploy/gateway/routes.yaml does.
const bffRoutes = jwtLines + `routes:
  - path: /bff/web/orders/{id}
    methods: [GET]
    service: gateway
    auth: jwt
  - path: /bff/mobile/orders/{id}
    methods: [GET]
    service: gateway
    auth: jwt
`

// The fake shop's data: Ann's shipped order, Bob who owns nothing, an admin.
const (
	bffOrderID = "0192f0c4-5e6a-7b3c-8d2e-1f0a9b8c7d6e"
	annID      = "0192f0c4-0000-7000-8000-0000000000a1"
	bobID      = "0192f0c4-0000-7000-8000-0000000000b2"
	adminID    = "0192f0c4-0000-7000-8000-0000000000ad"
)

var bffCustomers = map[string]customerPart{
	annID:   {ID: annID, Email: "ann@example.com", Name: "Ann"},
	bobID:   {ID: bobID, Email: "bob@example.com", Name: "Bob"},
	adminID: {ID: adminID, Email: "admin@mercato.local", Name: "Admin"},
}

var shippedAt = time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)

func annOrder() orderPart {
	at := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	return orderPart{
		ID: bffOrderID, CustomerID: annID, Status: "SHIPPED", Saga: "orchestrated", Version: 3,
		Items: []orderLine{
			{ProductID: "p-mug", Name: "Mug", Quantity: 2, UnitPrice: money{1200, "EUR"}},
			{ProductID: "p-tea", Name: "Tea", Quantity: 3, UnitPrice: money{450, "EUR"}},
		},
		Total: money{3750, "EUR"}, CreatedAt: at, UpdatedAt: shippedAt,
	}
}

// upstreamCall is one request as a fake service saw it.
type upstreamCall struct {
	service string
	uri     string
	header  http.Header
}

// shopOptions shape the fake services behind the gateway.
type shopOptions struct {
	cfg BFFConfig
	// handlers replace the fake's answer to a pattern, such as "GET /api/payments".
	handlers map[string]http.HandlerFunc
	// wrap, if set, wraps every fake service's handler.
	wrap func(http.Handler) http.Handler
	// absent services are missing from discovery.
	absent []string
}

// bffFixture is the gateway, with the BFF handlers, in front of fake order,
// customer and payment services that authorize as the real ones do.
type bffFixture struct {
	url    string
	client *http.Client
	keys   *signer
	mu     sync.Mutex
	calls  []upstreamCall
}

func newBFFFixture(t *testing.T, opts shopOptions) *bffFixture {
	t.Helper()
	f := &bffFixture{keys: newSigner(t, "k1")}
	_, rpc := customerv1connect.NewCustomerServiceHandler(fakeCustomers{})
	services := map[string]map[string]http.Handler{
		"order": {
			"GET /api/orders/{id}":        http.HandlerFunc(fakeOrder),
			"GET /api/orders/{id}/events": http.HandlerFunc(fakeOrderEvents(shippedEvents())),
		},
		"customer": {
			"GET /api/customers/me":                               http.HandlerFunc(fakeMe),
			customerv1connect.CustomerServiceGetCustomerProcedure: rpc,
		},
		"payment": {"GET /api/payments": http.HandlerFunc(fakePayments)},
	}
	table := map[string][]string{}
	for name, routes := range services {
		mux := http.NewServeMux()
		for pattern, h := range routes {
			if o, ok := opts.handlers[pattern]; ok {
				h = o
			}
			mux.Handle(pattern, h)
		}
		var h http.Handler = mux
		if opts.wrap != nil {
			h = opts.wrap(h)
		}
		srv := httptest.NewServer(f.record(name, h))
		t.Cleanup(srv.Close)
		if !slices.Contains(opts.absent, name) {
			table[name] = []string{srv.Listener.Addr().String()}
		}
	}
	base := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(base.CloseIdleConnections)
	client := &http.Client{Transport: discovery.Transport(discovery.Static(table), base)}
	self := bffHandlers(client, opts.cfg, slog.New(slog.DiscardHandler))
	f.url, f.client = startServer(t, gatewayHandler(t, bffRoutes, table, f.keys.jwksKeyfunc(t), self))
	return f
}

func (f *bffFixture) record(service string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.calls = append(f.calls, upstreamCall{service: service, uri: r.RequestURI, header: r.Header.Clone()})
		f.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

// seen returns the calls the fake services have seen, as "service uri", sorted.
func (f *bffFixture) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, len(f.calls))
	for i, c := range f.calls {
		out[i] = c.service + " " + c.uri
	}
	slices.Sort(out)
	return out
}

// get asks the gateway for path as sub with roles.
func (f *bffFixture) get(t *testing.T, path, sub string, roles ...string) (*http.Response, []byte) {
	t.Helper()
	// Bounds a gateway that waits for a service that never answers: the test
	// then fails instead of hanging.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req := newRequest(t, http.MethodGet, f.url+path, nil).WithContext(ctx)
	req.Header.Set("Authorization", "Bearer "+f.keys.sign(t, claimsFor(sub, roles...)))
	return do(t, f.client, req)
}

func (f *bffFixture) web(t *testing.T, sub string, roles ...string) (webOrderView, map[string]json.RawMessage) {
	t.Helper()
	resp, body := f.get(t, "/bff/web/orders/"+bffOrderID, sub, roles...)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200; body %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content type %q", ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("Cache-Control %q, want no-store: the answer is personal", cc)
	}
	var view webOrderView
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &view); err != nil {
		t.Fatalf("answer %s: %v", body, err)
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatalf("answer %s: %v", body, err)
	}
	keys := slices.Sorted(maps.Keys(raw))
	if want := []string{"customer", "degraded", "order", "payments", "shipment"}; !slices.Equal(keys, want) {
		t.Fatalf("keys %q, want %q", keys, want)
	}
	return view, raw
}

// wantDegraded checks degraded and that each part it names is null.
func wantDegraded(t *testing.T, view webOrderView, raw map[string]json.RawMessage, want ...string) {
	t.Helper()
	if want == nil {
		want = []string{}
	}
	if string(raw["degraded"]) == "null" || !slices.Equal(view.Degraded, want) {
		t.Fatalf("degraded %s, want %q", raw["degraded"], want)
	}
	for _, part := range want {
		if string(raw[part]) != "null" {
			t.Fatalf("%s is %s, want null: it is degraded", part, raw[part])
		}
	}
}

// The fake services. They read the caller from the identity headers and
// show an order, its events and its payments to its customer and admins
// only, as the real services do.

func ownerOrAdmin(r *http.Request) bool {
	c, ok := web.CallerOf(r)
	return ok && (c.Subject == annID || c.HasRole("admin"))
}

func fakeOrder(w http.ResponseWriter, r *http.Request) {
	if r.PathValue("id") != bffOrderID || !ownerOrAdmin(r) {
		web.Error(w, r, http.StatusNotFound, "no such order")
		return
	}
	web.WriteJSON(w, http.StatusOK, annOrder())
}

type fakeEvent struct {
	Version    int64           `json:"version"`
	Type       string          `json:"type"`
	Schema     int             `json:"schema"`
	Data       json.RawMessage `json:"data"`
	RecordedAt time.Time       `json:"recorded_at"`
}

func shippedEvents() []fakeEvent {
	return []fakeEvent{
		{Version: 1, Type: "order.created", Schema: 2, Data: json.RawMessage(`{"customer_id":"` + annID + `"}`), RecordedAt: shippedAt.Add(-time.Hour)},
		{Version: 2, Type: "order.confirmed", Schema: 1, Data: json.RawMessage(`{}`), RecordedAt: shippedAt.Add(-time.Minute)},
		{Version: 3, Type: "order.shipped", Schema: 1, Data: json.RawMessage(`{"shipment_id":"s-1","tracking_number":"MRC0042"}`), RecordedAt: shippedAt},
	}
}

func fakeOrderEvents(events []fakeEvent) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != bffOrderID || !ownerOrAdmin(r) {
			web.Error(w, r, http.StatusNotFound, "no such order")
			return
		}
		web.WriteJSON(w, http.StatusOK, events)
	}
}

func fakeMe(w http.ResponseWriter, r *http.Request) {
	c, ok := web.CallerOf(r)
	cust, known := bffCustomers[c.Subject]
	if !ok || !known {
		web.Error(w, r, http.StatusNotFound, "no such customer")
		return
	}
	web.WriteJSON(w, http.StatusOK, map[string]any{
		"id": cust.ID, "email": cust.Email, "name": cust.Name, "roles": c.Roles, "recent_orders": []any{},
	})
}

func fakePayments(w http.ResponseWriter, r *http.Request) {
	out := []paymentPart{}
	if r.URL.Query().Get("order_id") == bffOrderID && ownerOrAdmin(r) {
		out = append(out, paymentPart{ID: "pay-1", OrderID: bffOrderID, Amount: money{3750, "EUR"}, Status: "CAPTURED", CreatedAt: shippedAt.Add(-time.Hour)})
	}
	web.WriteJSON(w, http.StatusOK, out)
}

type fakeCustomers struct {
	customerv1connect.UnimplementedCustomerServiceHandler
}

func (fakeCustomers) GetCustomer(_ context.Context, req *connect.Request[customerv1.GetCustomerRequest]) (*connect.Response[customerv1.GetCustomerResponse], error) {
	c, ok := bffCustomers[req.Msg.GetId()]
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("no such customer"))
	}
	return connect.NewResponse(&customerv1.GetCustomerResponse{Customer: &customerv1.Customer{Id: c.ID, Email: c.Email, Name: c.Name}}), nil
}

// failing answers 500, as a service with a broken database does.
func failing(w http.ResponseWriter, r *http.Request) {
	web.Error(w, r, http.StatusInternalServerError, "")
}

// stuck never answers: it returns when the caller gives up (and reports it
// on cancelled) or when the test ends.
func stuck(t *testing.T, cancelled chan<- struct{}) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			if cancelled != nil {
				close(cancelled)
			}
		case <-t.Context().Done(): // before the servers close, which wait for handlers
		}
	}
}

func TestWebOrder_AggregatesEveryPart(t *testing.T) {
	f := newBFFFixture(t, shopOptions{})
	view, raw := f.web(t, annID, "customer")

	wantDegraded(t, view, raw)
	if o := view.Order; o == nil || o.ID != bffOrderID || o.Status != "SHIPPED" || o.Total != (money{3750, "EUR"}) || len(o.Items) != 2 {
		t.Fatalf("order %+v", view.Order)
	}
	if c := view.Customer; c == nil || *c != bffCustomers[annID] {
		t.Fatalf("customer %+v, want Ann", view.Customer)
	}
	if len(view.Payments) != 1 || view.Payments[0].Status != "CAPTURED" || view.Payments[0].Amount != (money{3750, "EUR"}) {
		t.Fatalf("payments %+v", view.Payments)
	}
	want := shipmentPart{ID: "s-1", TrackingNumber: "MRC0042", ShippedAt: shippedAt}
	if s := view.Shipment; s == nil || !s.ShippedAt.Equal(want.ShippedAt) || s.ID != want.ID || s.TrackingNumber != want.TrackingNumber {
		t.Fatalf("shipment %+v, want %+v", view.Shipment, want)
	}
}

func TestWebOrder_PassesIdentityAndCorrelationToEveryService(t *testing.T) {
	f := newBFFFixture(t, shopOptions{})
	req := newRequest(t, http.MethodGet, f.url+"/bff/web/orders/"+bffOrderID, nil)
	req.Header.Set("Authorization", "Bearer "+f.keys.sign(t, claimsFor(annID, "customer", "beta")))
	req.Header.Set(telemetry.CorrelationHeader, "bff-corr-42")
	resp, body := do(t, f.client, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d; body %s", resp.StatusCode, body)
	}

	want := []string{
		"customer /api/customers/me",
		"order /api/orders/" + bffOrderID,
		"order /api/orders/" + bffOrderID + "/events",
		"payment /api/payments?order_id=" + bffOrderID,
	}
	if got := f.seen(); !slices.Equal(got, want) {
		t.Fatalf("calls %q, want %q", got, want)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.calls {
		if got := c.header.Get(web.SubjectHeader); got != annID {
			t.Errorf("%s %s: subject %q, want %q", c.service, c.uri, got, annID)
		}
		if got := c.header.Get(web.RolesHeader); got != "customer,beta" {
			t.Errorf("%s %s: roles %q, want customer,beta", c.service, c.uri, got)
		}
		if got := c.header.Get(telemetry.CorrelationHeader); got != "bff-corr-42" {
			t.Errorf("%s %s: correlation id %q, want bff-corr-42", c.service, c.uri, got)
		}
	}
}

func TestWebOrder_AdminGetsTheOrdersCustomerThroughRPC(t *testing.T) {
	f := newBFFFixture(t, shopOptions{})
	view, raw := f.web(t, adminID, "admin")

	wantDegraded(t, view, raw)
	// The admin's own account would be the wrong customer.
	if c := view.Customer; c == nil || *c != bffCustomers[annID] {
		t.Fatalf("customer %+v, want Ann, the order's customer", view.Customer)
	}
	if len(view.Payments) != 1 || view.Shipment == nil {
		t.Fatalf("payments %+v, shipment %+v", view.Payments, view.Shipment)
	}
	want := []string{
		"customer " + customerv1connect.CustomerServiceGetCustomerProcedure,
		"order /api/orders/" + bffOrderID,
		"order /api/orders/" + bffOrderID + "/events",
		"payment /api/payments?order_id=" + bffOrderID,
	}
	if got := f.seen(); !slices.Equal(got, want) {
		t.Fatalf("calls %q, want %q", got, want)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.calls {
		if c.header.Get(web.SubjectHeader) != adminID || c.header.Get(web.RolesHeader) != "admin" || c.header.Get(telemetry.CorrelationHeader) == "" {
			t.Errorf("%s %s: identity %q %q, correlation %q", c.service, c.uri,
				c.header.Get(web.SubjectHeader), c.header.Get(web.RolesHeader), c.header.Get(telemetry.CorrelationHeader))
		}
	}
}

func TestWebOrder_SlowCustomerIsNullDegradedAndCancelled(t *testing.T) {
	cancelled := make(chan struct{})
	f := newBFFFixture(t, shopOptions{
		// Only the customer part can run out of time.
		cfg:      BFFConfig{CustomerTimeout: 50 * time.Millisecond, OrderTimeout: time.Minute, PaymentsTimeout: time.Minute, ShipmentTimeout: time.Minute},
		handlers: map[string]http.HandlerFunc{"GET /api/customers/me": stuck(t, cancelled)},
	})
	// The customer service never answers on its own: the answer arriving at
	// all shows the gateway stopped waiting for it.
	view, raw := f.web(t, annID, "customer")

	wantDegraded(t, view, raw, partCustomer)
	if view.Order == nil || len(view.Payments) != 1 || view.Shipment == nil {
		t.Fatalf("the other parts are missing: %+v", view)
	}
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the customer call was not cancelled: it goes on for nobody")
	}
}

func TestWebOrder_FailedPartIsNullAndDegraded(t *testing.T) {
	tests := []struct {
		part    string
		pattern string
		handler http.HandlerFunc
	}{
		{partCustomer, "GET /api/customers/me", failing},
		{partPayments, "GET /api/payments", failing},
		{partShipment, "GET /api/orders/{id}/events", failing},
		{partPayments, "GET /api/payments", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`[{"id":`)) // cut short
		}},
		// A payload the gateway does not know how to read is not guessed at.
		{partShipment, "GET /api/orders/{id}/events", fakeOrderEvents([]fakeEvent{
			{Version: 3, Type: "order.shipped", Schema: 2, Data: json.RawMessage(`{"parcels":[]}`), RecordedAt: shippedAt},
		})},
	}
	for _, tt := range tests {
		t.Run(tt.part, func(t *testing.T) {
			f := newBFFFixture(t, shopOptions{handlers: map[string]http.HandlerFunc{tt.pattern: tt.handler}})
			view, raw := f.web(t, annID, "customer")

			wantDegraded(t, view, raw, tt.part)
			if view.Order == nil || view.Order.ID != bffOrderID {
				t.Fatalf("order %+v", view.Order)
			}
			present := map[string]bool{
				partCustomer: view.Customer != nil, partPayments: view.Payments != nil, partShipment: view.Shipment != nil,
			}
			for part, ok := range present {
				if part != tt.part && !ok {
					t.Errorf("%s is missing though it did not fail", part)
				}
			}
		})
	}
}

func TestWebOrder_UnshippedOrderHasNoShipmentAndIsNotDegraded(t *testing.T) {
	f := newBFFFixture(t, shopOptions{handlers: map[string]http.HandlerFunc{
		"GET /api/orders/{id}/events": fakeOrderEvents(shippedEvents()[:2]),
	}})
	view, raw := f.web(t, annID, "customer")

	wantDegraded(t, view, raw)
	if string(raw[partShipment]) != "null" {
		t.Fatalf("shipment %s, want null", raw[partShipment])
	}
}

func TestWebOrder_NoPaymentsIsAnEmptyList(t *testing.T) {
	f := newBFFFixture(t, shopOptions{handlers: map[string]http.HandlerFunc{
		"GET /api/payments": func(w http.ResponseWriter, _ *http.Request) { web.WriteJSON(w, http.StatusOK, []any{}) },
	}})
	view, raw := f.web(t, annID, "customer")

	wantDegraded(t, view, raw)
	if string(raw[partPayments]) != "[]" {
		t.Fatalf("payments %s, want []: none is not unknown", raw[partPayments])
	}
}

func TestBFF_AnotherCustomersOrderIs404(t *testing.T) {
	for _, path := range []string{"/bff/web/orders/", "/bff/mobile/orders/"} {
		t.Run(path, func(t *testing.T) {
			f := newBFFFixture(t, shopOptions{})
			resp, body := f.get(t, path+bffOrderID, bobID, "customer")
			if p := wantProblem(t, resp, body, http.StatusNotFound); p.Detail != "no such order" {
				t.Fatalf("problem %+v", p)
			}
			// Nor is a missing order told apart.
			resp, body = f.get(t, path+"0192f0c4-ffff-7fff-bfff-ffffffffffff", annID, "customer")
			wantProblem(t, resp, body, http.StatusNotFound)
		})
	}
}

func TestBFF_OrderFailureFailsTheAnswer(t *testing.T) {
	tests := []struct {
		name   string
		opts   func(t *testing.T) shopOptions
		status int
	}{
		{"order service errs", func(*testing.T) shopOptions {
			return shopOptions{handlers: map[string]http.HandlerFunc{"GET /api/orders/{id}": failing}}
		}, http.StatusBadGateway},
		{"order service absent", func(*testing.T) shopOptions {
			return shopOptions{absent: []string{"order"}}
		}, http.StatusServiceUnavailable},
		{"order service too slow", func(t *testing.T) shopOptions {
			return shopOptions{
				cfg:      BFFConfig{OrderTimeout: 50 * time.Millisecond, CustomerTimeout: time.Minute, PaymentsTimeout: time.Minute, ShipmentTimeout: time.Minute},
				handlers: map[string]http.HandlerFunc{"GET /api/orders/{id}": stuck(t, nil)},
			}
		}, http.StatusGatewayTimeout},
	}
	for _, tt := range tests {
		for _, path := range []string{"/bff/web/orders/", "/bff/mobile/orders/"} {
			t.Run(tt.name+" "+path, func(t *testing.T) {
				f := newBFFFixture(t, tt.opts(t))
				resp, body := f.get(t, path+bffOrderID, annID, "customer")
				wantProblem(t, resp, body, tt.status)
			})
		}
	}
}

// barrier holds each caller until n have arrived, or until a deadline that
// only a sequential caller would reach.
type barrier struct {
	n       int
	mu      sync.Mutex
	arrived int
	all     chan struct{}
}

func (b *barrier) wait(ctx context.Context) bool {
	b.mu.Lock()
	b.arrived++
	if b.arrived == b.n {
		close(b.all)
	}
	b.mu.Unlock()
	select {
	case <-b.all:
		return true
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
	}
	return false
}

func TestWebOrder_FetchesThePartsInParallel(t *testing.T) {
	// The four calls (order, its events, customer, payments) each wait for
	// all four to have started. Fetched one after the other, the first
	// would wait alone until the barrier gives up and answers 503.
	b := &barrier{n: 4, all: make(chan struct{})}
	long := time.Minute
	f := newBFFFixture(t, shopOptions{
		cfg: BFFConfig{OrderTimeout: long, CustomerTimeout: long, PaymentsTimeout: long, ShipmentTimeout: long},
		wrap: func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !b.wait(r.Context()) {
					web.Error(w, r, http.StatusServiceUnavailable, "the other parts were not asked for at the same time")
					return
				}
				next.ServeHTTP(w, r)
			})
		},
	})
	view, raw := f.web(t, annID, "customer")

	wantDegraded(t, view, raw)
	if view.Order == nil || view.Customer == nil || view.Payments == nil || view.Shipment == nil {
		t.Fatalf("parts missing: %s", raw)
	}
}

func TestMobileOrder_IsCompact(t *testing.T) {
	f := newBFFFixture(t, shopOptions{})
	resp, body := f.get(t, "/bff/mobile/orders/"+bffOrderID, annID, "customer")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d; body %s", resp.StatusCode, body)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatalf("answer %s: %v", body, err)
	}
	if keys := slices.Sorted(maps.Keys(raw)); !slices.Equal(keys, []string{"id", "item_count", "status", "total"}) {
		t.Fatalf("keys %q, want exactly id, item_count, status, total", keys)
	}
	var view mobileOrderView
	if err := json.Unmarshal(body, &view); err != nil {
		t.Fatal(err)
	}
	// 2 mugs and 3 teas: quantities summed, not lines counted.
	want := mobileOrderView{ID: bffOrderID, Status: "SHIPPED", Total: money{3750, "EUR"}, ItemCount: 5}
	if view != want {
		t.Fatalf("answer %+v, want %+v", view, want)
	}
	if got := f.seen(); !slices.Equal(got, []string{"order /api/orders/" + bffOrderID}) {
		t.Fatalf("calls %q, want the order alone", got)
	}
}

func TestBFF_MalformedIDIs400(t *testing.T) {
	f := newBFFFixture(t, shopOptions{})
	for _, path := range []string{"/bff/web/orders/not-a-uuid", "/bff/mobile/orders/42", "/bff/web/orders/" + strings.ReplaceAll(bffOrderID, "-", "")} {
		resp, body := f.get(t, path, annID, "customer")
		p := wantProblem(t, resp, body, http.StatusBadRequest)
		if len(p.Errors) != 1 || p.Errors[0].Field != "id" {
			t.Fatalf("%s: problem %+v, want the field id named", path, p)
		}
	}
	if got := f.seen(); len(got) > 0 {
		t.Fatalf("services were called for a malformed id: %q", got)
	}
}

func TestBFF_WithoutIdentityIs401(t *testing.T) {
	// The route file marks BFF routes auth: jwt; one that did not would
	// reach the handlers without a caller.
	handlers := bffHandlers(http.DefaultClient, BFFConfig{}, slog.New(slog.DiscardHandler))
	for pattern, h := range handlers {
		mux := http.NewServeMux()
		mux.Handle(pattern, h)
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, strings.Replace(pattern, "{id}", bffOrderID, 1), nil))
		if rec.Code != http.StatusUnauthorized || rec.Header().Get("Content-Type") != web.ProblemContentType {
			t.Fatalf("%s: status %d %q, want a 401 problem", pattern, rec.Code, rec.Header().Get("Content-Type"))
		}
	}
}

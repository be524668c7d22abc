package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	customerv1 "github.com/mercato-shop/mercato/api/gen/customer/v1"
	"github.com/mercato-shop/mercato/api/gen/customer/v1/customerv1connect"
	"github.com/mercato-shop/mercato/platform/discovery"
	"github.com/mercato-shop/mercato/platform/resilience"
	"github.com/mercato-shop/mercato/platform/telemetry"
	"github.com/mercato-shop/mercato/platform/web"
)

// Backend for Frontend: each kind of client gets an endpoint shaped for its
// screen. The web's order page gets the order, its customer, its payments
// and its shipment in one answer; the mobile app gets four fields. Both are
// answered by the gateway itself (routes with service: gateway), from the
// services' REST APIs, as the caller: each service still decides what the
// caller may see. See docs/patterns/bff.md.

// Route paths of the BFF endpoints, the keys of bffHandlers' map.
const (
	bffWebOrderPath    = "/bff/web/orders/{id}"
	bffMobileOrderPath = "/bff/mobile/orders/{id}"
)

// DefaultBFFTimeout bounds each part of a BFF answer whose timeout is not set.
const DefaultBFFTimeout = 800 * time.Millisecond

// maxPartBytes bounds what the gateway reads of one upstream answer.
const maxPartBytes = 1 << 20

// Parts of /bff/web/orders/{id}: the answer's keys, and what degraded names.
const (
	partOrder    = "order"
	partCustomer = "customer"
	partPayments = "payments"
	partShipment = "shipment"
)

// BFFConfig bounds each part of a BFF answer. A part's time counts from the
// request's arrival, so the whole answer takes at most the longest of them.
// Zero means DefaultBFFTimeout.
type BFFConfig struct {
	OrderTimeout    time.Duration `yaml:"order_timeout"`
	CustomerTimeout time.Duration `yaml:"customer_timeout"`
	PaymentsTimeout time.Duration `yaml:"payments_timeout"`
	ShipmentTimeout time.Duration `yaml:"shipment_timeout"`
}

func (c BFFConfig) withDefaults() BFFConfig {
	for _, d := range []*time.Duration{&c.OrderTimeout, &c.CustomerTimeout, &c.PaymentsTimeout, &c.ShipmentTimeout} {
		if *d <= 0 {
			*d = DefaultBFFTimeout
		}
	}
	return c
}

// money is an amount in minor units of currency.
type money struct {
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
}

// orderLine is one line of an order.
type orderLine struct {
	ProductID string `json:"product_id"`
	Name      string `json:"name"`
	Quantity  int64  `json:"quantity"`
	UnitPrice money  `json:"unit_price"`
}

// orderPart is the order as the order service answers GET /api/orders/{id}.
type orderPart struct {
	ID         string      `json:"id"`
	CustomerID string      `json:"customer_id"`
	Status     string      `json:"status"`
	Reason     string      `json:"reason,omitempty"`
	Items      []orderLine `json:"items"`
	Total      money       `json:"total"`
	Saga       string      `json:"saga"`
	Version    int64       `json:"version"`
	CreatedAt  time.Time   `json:"created_at"`
	UpdatedAt  time.Time   `json:"updated_at"`
}

// customerPart is who placed the order.
type customerPart struct {
	ID    string `json:"id"`
	Email string `json:"email"`
	Name  string `json:"name"`
}

// paymentPart is one payment of the order, as GET /api/payments lists it.
type paymentPart struct {
	ID        string    `json:"id"`
	OrderID   string    `json:"order_id"`
	Amount    money     `json:"amount"`
	Status    string    `json:"status"`
	Reason    string    `json:"reason,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// shipmentPart is how a shipped order left the warehouse.
type shipmentPart struct {
	ID             string    `json:"id"`
	TrackingNumber string    `json:"tracking_number"`
	ShippedAt      time.Time `json:"shipped_at"`
}

// webOrderView answers GET /bff/web/orders/{id}. A part that failed or ran
// out of time is null and named in Degraded; Shipment is also null, but not
// degraded, while the order has not shipped.
type webOrderView struct {
	Order    *orderPart    `json:"order"`
	Customer *customerPart `json:"customer"`
	Payments []paymentPart `json:"payments"`
	Shipment *shipmentPart `json:"shipment"`
	Degraded []string      `json:"degraded"`
}

// mobileOrderView answers GET /bff/mobile/orders/{id}.
type mobileOrderView struct {
	ID        string `json:"id"`
	Status    string `json:"status"`
	Total     money  `json:"total"`
	ItemCount int64  `json:"item_count"` // the quantities of all lines, summed
}

// statusError: a service answered, but not 200.
type statusError struct {
	service string
	status  int
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%s answered %d %s", e.service, e.status, http.StatusText(e.status))
}

// errNoOrder: the customer of an order that could not be read is unknown.
var errNoOrder = errors.New("the order's customer is unknown: the order part failed")

type bff struct {
	client    *http.Client
	customers customerv1connect.CustomerServiceClient
	cfg       BFFConfig
	logger    *slog.Logger
}

// bffHandlers returns the BFF endpoints keyed by route path, for the
// gateway's own routes (New's self). client reaches services by name
// (http://order/...); cfg bounds each part.
func bffHandlers(client *http.Client, cfg BFFConfig, logger *slog.Logger) map[string]http.Handler {
	b := &bff{
		client:    client,
		customers: customerv1connect.NewCustomerServiceClient(client, "http://customer"),
		cfg:       cfg.withDefaults(),
		logger:    logger,
	}
	return map[string]http.Handler{
		bffWebOrderPath:    http.HandlerFunc(b.webOrder),
		bffMobileOrderPath: http.HandlerFunc(b.mobileOrder),
	}
}

// webOrder answers the web's order page. The parts are fetched in parallel,
// each under its own timeout; a failed part is null and named in degraded.
// The order is the exception: without it there is nothing to show, so its
// failure is the answer's (404, or 502/503/504), not a degradation.
func (b *bff) webOrder(w http.ResponseWriter, r *http.Request) {
	caller, id, ok := bffRequest(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()

	var (
		wg        sync.WaitGroup
		view      webOrderView
		orderErr  error
		orderDone = make(chan struct{}) // closed once view.Order or orderErr is set
		partErrs  = map[string]error{}
		mu        sync.Mutex // guards partErrs
	)
	run := func(name string, timeout time.Duration, fetch func(context.Context) error) {
		wg.Go(func() {
			if err := within(ctx, timeout, fetch); err != nil {
				mu.Lock()
				partErrs[name] = err
				mu.Unlock()
			}
		})
	}
	wg.Go(func() {
		defer close(orderDone)
		var o orderPart
		orderErr = within(ctx, b.cfg.OrderTimeout, func(ctx context.Context) error {
			return b.get(ctx, r, "order", "/api/orders/"+id, &o)
		})
		if orderErr != nil {
			cancel() // the answer is the order's failure: the other parts are wasted work
			return
		}
		view.Order = &o
	})
	run(partCustomer, b.cfg.CustomerTimeout, func(ctx context.Context) (err error) {
		view.Customer, err = b.customer(ctx, r, caller, func() (*orderPart, error) {
			select {
			case <-orderDone:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if orderErr != nil {
				return nil, errNoOrder
			}
			return view.Order, nil
		})
		return err
	})
	run(partPayments, b.cfg.PaymentsTimeout, func(ctx context.Context) error {
		var ps []paymentPart
		if err := b.get(ctx, r, "payment", "/api/payments?order_id="+id, &ps); err != nil {
			return err
		}
		if ps == nil { // the service answered null
			ps = []paymentPart{}
		}
		view.Payments = ps
		return nil
	})
	run(partShipment, b.cfg.ShipmentTimeout, func(ctx context.Context) (err error) {
		view.Shipment, err = b.shipment(ctx, r, id)
		return err
	})
	wg.Wait()

	if orderErr != nil {
		b.orderFailed(w, r, orderErr)
		return
	}
	view.Degraded = []string{}
	for _, name := range []string{partCustomer, partPayments, partShipment} {
		if err := partErrs[name]; err != nil {
			view.Degraded = append(view.Degraded, name)
			b.logger.WarnContext(r.Context(), "bff part degraded", "part", name, "order_id", id, "err", err)
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	web.WriteJSON(w, http.StatusOK, view)
}

// mobileOrder answers the app's compact order: one call to the order service.
func (b *bff) mobileOrder(w http.ResponseWriter, r *http.Request) {
	_, id, ok := bffRequest(w, r)
	if !ok {
		return
	}
	var o orderPart
	err := within(r.Context(), b.cfg.OrderTimeout, func(ctx context.Context) error {
		return b.get(ctx, r, "order", "/api/orders/"+id, &o)
	})
	if err != nil {
		b.orderFailed(w, r, err)
		return
	}
	view := mobileOrderView{ID: o.ID, Status: o.Status, Total: o.Total}
	for _, l := range o.Items {
		view.ItemCount += l.Quantity
	}
	w.Header().Set("Cache-Control", "no-store")
	web.WriteJSON(w, http.StatusOK, view)
}

// bffRequest reads the caller (the gateway has verified the token and set
// the identity headers) and the order id; ok is false when it has answered.
func bffRequest(w http.ResponseWriter, r *http.Request) (caller web.Caller, id string, ok bool) {
	caller, ok = web.CallerOf(r)
	if !ok {
		// Only a route file that marks a BFF route auth: none gets here.
		web.Error(w, r, http.StatusUnauthorized, "sign in first")
		return caller, "", false
	}
	// Only the canonical form: uuid.Parse also takes braces, urn:uuid: and
	// bare hex, which the services would look up verbatim and not find.
	u, err := uuid.Parse(r.PathValue("id"))
	if err != nil || len(r.PathValue("id")) != len(u.String()) {
		web.WriteProblem(w, r, web.Invalid(web.FieldError{Field: "id", Message: "must be a UUID"}))
		return caller, "", false
	}
	return caller, u.String(), true
}

// customer fetches the order's customer. A customer's own order is theirs:
// GET /api/customers/me, as the caller, without waiting for the order. An
// admin may read anyone's order, whose customer is known only from the
// order; the customer service has no REST read of another customer, so it
// is asked through its internal GetCustomer RPC, once the order service
// has let the caller read the order.
func (b *bff) customer(ctx context.Context, r *http.Request, caller web.Caller, order func() (*orderPart, error)) (*customerPart, error) {
	if !caller.HasRole("admin") {
		var c customerPart
		if err := b.get(ctx, r, "customer", "/api/customers/me", &c); err != nil {
			return nil, err
		}
		return &c, nil
	}
	o, err := order()
	if err != nil {
		return nil, err
	}
	if o.CustomerID == caller.Subject {
		var c customerPart
		if err := b.get(ctx, r, "customer", "/api/customers/me", &c); err != nil {
			return nil, err
		}
		return &c, nil
	}
	req := connect.NewRequest(&customerv1.GetCustomerRequest{Id: o.CustomerID})
	passIdentity(req.Header(), r)
	// GetCustomer has no side effects: the resilience policies may retry it.
	resp, err := b.customers.GetCustomer(resilience.Idempotent(ctx), req)
	if err != nil {
		return nil, fmt.Errorf("customer GetCustomer %s: %w", o.CustomerID, err)
	}
	c := resp.Msg.GetCustomer()
	return &customerPart{ID: c.GetId(), Email: c.GetEmail(), Name: c.GetName()}, nil
}

// shippedSchema is the order.shipped payload the gateway reads.
const shippedSchema = 1

// shipment finds the order's shipment in its event stream, the audit trail
// (GET /api/orders/{id}/events): the order service's order answer does not
// carry it. nil, nil while the order has not shipped.
func (b *bff) shipment(ctx context.Context, r *http.Request, id string) (*shipmentPart, error) {
	var events []struct {
		Type       string          `json:"type"`
		Schema     int             `json:"schema"`
		Data       json.RawMessage `json:"data"`
		RecordedAt time.Time       `json:"recorded_at"`
	}
	if err := b.get(ctx, r, "order", "/api/orders/"+id+"/events", &events); err != nil {
		return nil, err
	}
	for _, e := range events {
		if e.Type != "order.shipped" {
			continue
		}
		if e.Schema != shippedSchema {
			return nil, fmt.Errorf("order.shipped of order %s has schema %d; the gateway reads %d", id, e.Schema, shippedSchema)
		}
		var d struct {
			ShipmentID     string `json:"shipment_id"`
			TrackingNumber string `json:"tracking_number"`
		}
		if err := json.Unmarshal(e.Data, &d); err != nil {
			return nil, fmt.Errorf("decode order.shipped of order %s: %w", id, err)
		}
		return &shipmentPart{ID: d.ShipmentID, TrackingNumber: d.TrackingNumber, ShippedAt: e.RecordedAt.UTC()}, nil
	}
	return nil, nil
}

// get reads http://service/path into v as JSON, on behalf of the caller of r.
func (b *bff) get(ctx context.Context, r *http.Request, service, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+service+path, nil)
	if err != nil {
		return fmt.Errorf("GET %s%s: %w", service, path, err)
	}
	passIdentity(req.Header, r)
	req.Header.Set("Accept", "application/json")
	resp, err := b.client.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s%s: %w", service, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxPartBytes)) // lets the connection be reused
		return fmt.Errorf("GET %s%s: %w", service, path, &statusError{service: service, status: resp.StatusCode})
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxPartBytes)).Decode(v); err != nil {
		return fmt.Errorf("decode GET %s%s: %w", service, path, err)
	}
	return nil
}

// passIdentity sends the caller's identity, as the gateway verified it, and
// the request's correlation id on to a service: each service applies its
// own rules (owner or admin) to the caller, not to the gateway.
func passIdentity(h http.Header, r *http.Request) {
	for _, k := range []string{web.SubjectHeader, web.RolesHeader} {
		if v := r.Header.Get(k); v != "" {
			h.Set(k, v)
		}
	}
	if id := telemetry.CorrelationID(r.Context()); id != "" {
		h.Set(telemetry.CorrelationHeader, id)
	}
}

// within runs fetch under timeout. An error of a fetch that ran out of time
// (or was cancelled) says so, whatever the step that noticed.
func within(ctx context.Context, timeout time.Duration, fetch func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := fetch(ctx)
	if err != nil && ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		err = fmt.Errorf("%w: %w", ctx.Err(), err)
	}
	return err
}

// orderFailed answers a request whose order could not be read.
func (b *bff) orderFailed(w http.ResponseWriter, r *http.Request, err error) {
	var status *statusError
	switch {
	case errors.As(err, &status) && status.status == http.StatusNotFound:
		// Missing, or another customer's: the order service does not say which.
		web.Error(w, r, http.StatusNotFound, "no such order")
	case errors.Is(err, discovery.ErrNoInstance), errors.Is(err, resilience.ErrOpen), errors.Is(err, resilience.ErrFull):
		web.Error(w, r, http.StatusServiceUnavailable, "the order service is not available; try again shortly")
	case r.Context().Err() != nil:
		// The client went away; nobody reads the answer.
		w.WriteHeader(499)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, resilience.ErrTimeout):
		web.Error(w, r, http.StatusGatewayTimeout, "the order service did not answer in time")
	default:
		b.logger.WarnContext(r.Context(), "bff order part failed", "path", r.URL.Path, "err", err)
		web.Error(w, r, http.StatusBadGateway, "the order service failed to answer")
	}
}

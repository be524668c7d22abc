package adapters

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/mercato-shop/mercato/platform/web"
	"github.com/mercato-shop/mercato/services/orderview/app"
	"github.com/mercato-shop/mercato/services/orderview/domain"
)

// roleAdmin may read the statistics and manage the projections. The
// gateway checks it too; a service reachable without the gateway must not
// rely on that alone.
const roleAdmin = "admin"

type ordersQuery interface {
	Handle(ctx context.Context, q app.ListOrders) (app.Page, error)
}

type statsQuery interface {
	Stats(ctx context.Context) (domain.Stats, error)
}

// ProjectionAdmin is what the admin API does with a projection; *Runner
// provides it.
type ProjectionAdmin interface {
	Name() string
	Status(ctx context.Context) (Status, error)
	Rebuild(ctx context.Context) error
}

// HTTP serves the read models.
type HTTP struct {
	Orders      ordersQuery
	Stats       statsQuery
	Projections []ProjectionAdmin
	Logger      *slog.Logger
}

// Routes adds the endpoints to mux.
func (h *HTTP) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/orders", h.list)
	mux.HandleFunc("GET /admin/stats", h.admin(h.stats))
	mux.HandleFunc("GET /admin/projections", h.admin(h.projections))
	mux.HandleFunc("GET /admin/projections/{name}", h.admin(h.projection))
	mux.HandleFunc("POST /admin/projections/{name}/rebuild", h.admin(h.rebuild))
}

type moneyJSON struct {
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
}

type lineJSON struct {
	ProductID string    `json:"product_id"`
	Name      string    `json:"name"`
	Quantity  int64     `json:"quantity"`
	UnitPrice moneyJSON `json:"unit_price"`
}

type shipmentJSON struct {
	ShipmentID     string    `json:"shipment_id"`
	TrackingNumber string    `json:"tracking_number"`
	ShippedAt      time.Time `json:"shipped_at"`
}

// orderJSON is an order as GET /api/orders/{id} shows it, plus what the
// read model copies in from other contexts.
type orderJSON struct {
	ID           string     `json:"id"`
	CustomerID   string     `json:"customer_id"`
	CustomerName string     `json:"customer_name"`
	Status       string     `json:"status"`
	Reason       string     `json:"reason,omitempty"`
	Items        []lineJSON `json:"items"`
	Total        moneyJSON  `json:"total"`
	Saga         string     `json:"saga"`
	// CAPTURED, DECLINED, REFUNDED or VOIDED; absent until payment says.
	PaymentStatus string        `json:"payment_status,omitempty"`
	Shipment      *shipmentJSON `json:"shipment"`
	Version       int64         `json:"version"`
	CreatedAt     time.Time     `json:"created_at"`
	UpdatedAt     time.Time     `json:"updated_at"`
}

type pageJSON struct {
	Orders     []orderJSON `json:"orders"`
	NextCursor string      `json:"next_cursor,omitempty"`
}

func toJSON(o domain.Order) orderJSON {
	items := make([]lineJSON, len(o.Items))
	for i, l := range o.Items {
		items[i] = lineJSON{l.ProductID, l.Name, l.Quantity, moneyJSON{l.UnitPrice.Amount, l.UnitPrice.Currency}}
	}
	out := orderJSON{
		ID: o.ID, CustomerID: o.CustomerID, CustomerName: o.CustomerName, Status: o.Status, Reason: o.Reason,
		Items: items, Total: moneyJSON{o.Total.Amount, o.Total.Currency}, Saga: o.Saga, PaymentStatus: o.PaymentStatus,
		Version: o.Version, CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt,
	}
	if s := o.Shipment; s != nil {
		out.Shipment = &shipmentJSON{s.ID, s.TrackingNumber, s.ShippedAt}
	}
	return out
}

// list answers GET /api/orders?limit=&cursor=: the caller's orders, newest
// first.
func (h *HTTP) list(w http.ResponseWriter, r *http.Request) {
	caller, ok := web.CallerOf(r)
	if !ok {
		web.Error(w, r, http.StatusUnauthorized, "sign in first")
		return
	}
	q := app.ListOrders{CustomerID: caller.Subject, Limit: app.DefaultLimit}
	var invalid []web.FieldError
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > app.MaxLimit {
			invalid = append(invalid, web.FieldError{Field: "limit", Message: "must be a whole number from 1 to " + strconv.Itoa(app.MaxLimit)})
		}
		q.Limit = n
	}
	if v := r.URL.Query().Get("cursor"); v != "" {
		c, err := decodeCursor(v)
		if err != nil {
			invalid = append(invalid, web.FieldError{Field: "cursor", Message: "is not a cursor this API returned"})
		}
		q.After = c
	}
	if len(invalid) > 0 {
		web.WriteProblem(w, r, web.Invalid(invalid...))
		return
	}
	page, err := h.Orders.Handle(r.Context(), q)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := pageJSON{Orders: make([]orderJSON, len(page.Orders))}
	for i, o := range page.Orders {
		out.Orders[i] = toJSON(o)
	}
	if page.Next != nil {
		out.NextCursor = encodeCursor(*page.Next)
	}
	w.Header().Set("Cache-Control", "no-store")
	web.WriteJSON(w, http.StatusOK, out)
}

// Cursors are opaque to clients: base64url of "v1.<created_at µs>.<order id>".
const cursorVersion = "v1"

func encodeCursor(c app.Cursor) string {
	raw := cursorVersion + "." + strconv.FormatInt(micros(c.CreatedAt), 10) + "." + c.ID
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

var errBadCursor = errors.New("bad cursor")

func decodeCursor(s string) (*app.Cursor, error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, errBadCursor
	}
	parts := strings.Split(string(raw), ".")
	if len(parts) != 3 || parts[0] != cursorVersion {
		return nil, errBadCursor
	}
	at, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return nil, errBadCursor
	}
	if _, err := uuid.Parse(parts[2]); err != nil {
		return nil, errBadCursor
	}
	return &app.Cursor{CreatedAt: fromMicros(at), ID: parts[2]}, nil
}

// admin lets callers with the admin role through.
func (h *HTTP) admin(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		caller, ok := web.CallerOf(r)
		if !ok {
			web.Error(w, r, http.StatusUnauthorized, "sign in first")
			return
		}
		if !caller.HasRole(roleAdmin) {
			web.Error(w, r, http.StatusForbidden, "this needs the role admin")
			return
		}
		next(w, r)
	}
}

type statsJSON struct {
	OrdersPerHour []hourJSON   `json:"orders_per_hour"`
	Cancellations []reasonJSON `json:"cancellations"`
	Sagas         []sagaJSON   `json:"sagas"`
}

type hourJSON struct {
	Hour    time.Time `json:"hour"`
	Orders  int64     `json:"orders"`
	Revenue moneyJSON `json:"revenue"`
}

type reasonJSON struct {
	Reason string `json:"reason"`
	Orders int64  `json:"orders"`
}

type sagaJSON struct {
	Saga       string        `json:"saga"`
	Confirmed  int64         `json:"confirmed"`
	Cancelled  int64         `json:"cancelled"`
	InFlight   int64         `json:"in_flight"`
	DurationMS durationsJSON `json:"duration_ms"`
}

type durationsJSON struct {
	Count int64 `json:"count"`
	Avg   int64 `json:"avg"`
	Max   int64 `json:"max"`
}

// stats answers GET /admin/stats from the analytics read model.
func (h *HTTP) stats(w http.ResponseWriter, r *http.Request) {
	st, err := h.Stats.Stats(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := statsJSON{OrdersPerHour: []hourJSON{}, Cancellations: []reasonJSON{}, Sagas: []sagaJSON{}}
	for _, hr := range st.Hourly {
		out.OrdersPerHour = append(out.OrdersPerHour, hourJSON{hr.Hour, hr.Orders, moneyJSON{hr.Revenue.Amount, hr.Revenue.Currency}})
	}
	for _, c := range st.Cancellations {
		out.Cancellations = append(out.Cancellations, reasonJSON{c.Reason, c.Orders})
	}
	for _, s := range st.Sagas {
		d := s.Durations
		out.Sagas = append(out.Sagas, sagaJSON{s.Saga, s.Confirmed, s.Cancelled, s.InFlight,
			durationsJSON{d.Count, d.Avg().Milliseconds(), d.Max.Milliseconds()}})
	}
	w.Header().Set("Cache-Control", "no-store")
	web.WriteJSON(w, http.StatusOK, out)
}

type statusJSON struct {
	Name       string            `json:"name"`
	State      string            `json:"state"`
	Generation int64             `json:"generation"`
	RebuiltAt  *time.Time        `json:"rebuilt_at"`
	Streams    []streamJSON      `json:"streams"`
	Errors     map[string]string `json:"errors,omitempty"`
}

type streamJSON struct {
	Stream       string `json:"stream"`
	Checkpoint   uint64 `json:"checkpoint"`
	LastSequence uint64 `json:"last_sequence"`
	Lag          uint64 `json:"lag"`
}

func statusToJSON(s Status) statusJSON {
	out := statusJSON{Name: s.Name, State: s.State, Generation: s.Generation, Streams: []streamJSON{}, Errors: s.Errors}
	if !s.RebuiltAt.IsZero() {
		out.RebuiltAt = &s.RebuiltAt
	}
	for _, st := range s.Streams {
		out.Streams = append(out.Streams, streamJSON{st.Stream, st.Checkpoint, st.Last, st.Lag})
	}
	return out
}

// projections answers GET /admin/projections: where each stands.
func (h *HTTP) projections(w http.ResponseWriter, r *http.Request) {
	out := struct {
		Projections []statusJSON `json:"projections"`
	}{Projections: []statusJSON{}}
	for _, p := range h.Projections {
		st, err := p.Status(r.Context())
		if err != nil {
			h.fail(w, r, err)
			return
		}
		out.Projections = append(out.Projections, statusToJSON(st))
	}
	w.Header().Set("Cache-Control", "no-store")
	web.WriteJSON(w, http.StatusOK, out)
}

func (h *HTTP) find(w http.ResponseWriter, r *http.Request) (ProjectionAdmin, bool) {
	name := r.PathValue("name")
	for _, p := range h.Projections {
		if p.Name() == name {
			return p, true
		}
	}
	web.Error(w, r, http.StatusNotFound, "no projection named "+strconv.Quote(name))
	return nil, false
}

// projection answers GET /admin/projections/{name}.
func (h *HTTP) projection(w http.ResponseWriter, r *http.Request) {
	p, ok := h.find(w, r)
	if !ok {
		return
	}
	st, err := p.Status(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	web.WriteJSON(w, http.StatusOK, statusToJSON(st))
}

// rebuild answers POST /admin/projections/{name}/rebuild: the read model
// is dropped at once and replayed in the background; 202 with where it
// stands, which GET /admin/projections/{name} follows.
func (h *HTTP) rebuild(w http.ResponseWriter, r *http.Request) {
	p, ok := h.find(w, r)
	if !ok {
		return
	}
	if err := p.Rebuild(r.Context()); err != nil {
		h.fail(w, r, err)
		return
	}
	st, err := p.Status(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	caller, _ := web.CallerOf(r)
	h.Logger.InfoContext(r.Context(), "projection rebuild requested", "projection", p.Name(), "by", caller.Subject, "generation", st.Generation)
	w.Header().Set("Location", "/admin/projections/"+p.Name())
	web.WriteJSON(w, http.StatusAccepted, statusToJSON(st))
}

// fail maps errors to problems, in one place.
func (h *HTTP) fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, app.ErrInvalidLimit) {
		web.WriteProblem(w, r, web.Invalid(web.FieldError{Field: "limit", Message: err.Error()}))
		return
	}
	h.Logger.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	web.Error(w, r, http.StatusInternalServerError, "")
}

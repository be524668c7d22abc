package adapters

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/mercato-shop/mercato/platform/eventstore"
	"github.com/mercato-shop/mercato/platform/web"
	"github.com/mercato-shop/mercato/services/order/app"
	"github.com/mercato-shop/mercato/services/order/domain"
)

type placer interface {
	Handle(ctx context.Context, cmd app.PlaceOrder) (*domain.Order, bool, error)
}

type canceller interface {
	Cancel(ctx context.Context, cmd app.CancelOrder) (*domain.Order, error)
}

type orderReader interface {
	Order(ctx context.Context, id string) (*domain.Order, error)
	OrderAt(ctx context.Context, id string, version int64) (*domain.Order, error)
	Events(ctx context.Context, id string) ([]eventstore.Event, error)
}

// HTTP serves the order context's REST endpoints.
type HTTP struct {
	Place  placer
	Cancel canceller
	Orders orderReader
	Logger *slog.Logger
}

// Routes adds the endpoints to mux.
func (h *HTTP) Routes(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/orders", h.place)
	mux.HandleFunc("GET /api/orders/{id}", h.get)
	mux.HandleFunc("GET /api/orders/{id}/events", h.events)
	mux.HandleFunc("POST /api/orders/{id}/cancel", h.cancel)
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

// OrderJSON is an order as the REST API shows it.
type OrderJSON struct {
	ID         string     `json:"id"`
	CustomerID string     `json:"customer_id"`
	Status     string     `json:"status"`
	Reason     string     `json:"reason,omitempty"`
	Items      []lineJSON `json:"items"`
	Total      moneyJSON  `json:"total"`
	Saga       string     `json:"saga"`
	Version    int64      `json:"version"`
	CreatedAt  time.Time  `json:"created_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
}

func toJSON(o *domain.Order) OrderJSON {
	items := make([]lineJSON, 0, len(o.Lines()))
	for _, l := range o.Lines() {
		items = append(items, lineJSON{l.ProductID, l.Name, l.Quantity, moneyJSON{l.UnitPrice.Amount, l.UnitPrice.Currency}})
	}
	t := o.Total()
	return OrderJSON{
		ID: o.ID(), CustomerID: o.CustomerID(), Status: string(o.Status()), Reason: o.Reason(), Items: items,
		Total: moneyJSON{t.Amount, t.Currency}, Saga: o.Saga(), Version: o.Version(),
		CreatedAt: o.CreatedAt(), UpdatedAt: o.UpdatedAt(),
	}
}

type placeRequest struct {
	Items []struct {
		ProductID string `json:"product_id"`
		Quantity  int64  `json:"quantity"`
	} `json:"items"`
	Saga    string `json:"saga,omitempty"`
	Payment struct {
		Token string `json:"token"`
	} `json:"payment"`
}

const maxIdempotencyKey = 255

func (h *HTTP) place(w http.ResponseWriter, r *http.Request) {
	caller, ok := web.CallerOf(r)
	if !ok {
		web.Error(w, r, http.StatusUnauthorized, "sign in first")
		return
	}
	var req placeRequest
	if p := web.Decode(w, r, &req, 64<<10); p != nil {
		web.WriteProblem(w, r, p)
		return
	}
	cmd := app.PlaceOrder{CustomerID: caller.Subject, Saga: req.Saga, PaymentToken: req.Payment.Token}
	for _, it := range req.Items {
		cmd.Items = append(cmd.Items, domain.Item{ProductID: it.ProductID, Quantity: it.Quantity})
	}
	if key := r.Header.Get("Idempotency-Key"); key != "" {
		if len(key) > maxIdempotencyKey {
			web.WriteProblem(w, r, web.Invalid(web.FieldError{Field: "Idempotency-Key", Message: "must be at most 255 characters"}))
			return
		}
		// The hash of the decoded request, so that spacing or field order
		// does not make the same request look different.
		canonical, _ := json.Marshal(req)
		sum := sha256.Sum256(canonical)
		cmd.Idempotency = &app.IdempotencyKey{Key: key, RequestHash: hex.EncodeToString(sum[:])}
	}
	o, _, err := h.Place.Handle(r.Context(), cmd)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/api/orders/"+o.ID())
	web.WriteJSON(w, http.StatusAccepted, toJSON(o))
}

// orderRequest reads the caller and the order id of /api/orders/{id} and
// its sub-paths; ok is false when it has answered the request already.
func orderRequest(w http.ResponseWriter, r *http.Request) (caller web.Caller, id string, ok bool) {
	caller, ok = web.CallerOf(r)
	if !ok {
		web.Error(w, r, http.StatusUnauthorized, "sign in first")
		return caller, "", false
	}
	id = r.PathValue("id")
	if _, err := uuid.Parse(id); err != nil {
		web.Error(w, r, http.StatusNotFound, "no such order")
		return caller, "", false
	}
	return caller, id, true
}

func (h *HTTP) get(w http.ResponseWriter, r *http.Request) {
	caller, id, ok := orderRequest(w, r)
	if !ok {
		return
	}
	var version int64
	if v := r.URL.Query().Get("version"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			web.WriteProblem(w, r, web.Invalid(web.FieldError{Field: "version", Message: "must be a whole number from 1"}))
			return
		}
		version = n
	}
	// As of a version, the order is replayed from its events up to it: a
	// version the order has not reached is 404.
	o, err := h.Orders.OrderAt(r.Context(), id, version)
	if err == nil && !mayRead(caller, o) {
		err = domain.ErrNotFound
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	web.WriteJSON(w, http.StatusOK, toJSON(o))
}

// mayRead: an order is its customer's, and an admin's; to anyone else it
// does not exist, as far as they can tell.
func mayRead(caller web.Caller, o *domain.Order) bool {
	return o.CustomerID() == caller.Subject || caller.HasRole("admin")
}

// EventJSON is one stored event of an order, at its current schema.
type EventJSON struct {
	ID         string          `json:"id"`
	Version    int64           `json:"version"`
	Type       string          `json:"type"`
	Schema     int             `json:"schema"`
	Data       json.RawMessage `json:"data"`
	RecordedAt time.Time       `json:"recorded_at"`
}

// events answers the order's event stream, oldest first: the audit trail.
func (h *HTTP) events(w http.ResponseWriter, r *http.Request) {
	caller, id, ok := orderRequest(w, r)
	if !ok {
		return
	}
	o, err := h.Orders.Order(r.Context(), id)
	if err == nil && !mayRead(caller, o) {
		err = domain.ErrNotFound
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	evs, err := h.Orders.Events(r.Context(), id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := make([]EventJSON, len(evs))
	for i, e := range evs {
		out[i] = EventJSON{ID: e.ID, Version: e.Version, Type: e.Type, Schema: e.Schema, Data: e.Data, RecordedAt: e.RecordedAt}
	}
	web.WriteJSON(w, http.StatusOK, out)
}

// cancel starts the compensation of an order: 202 with the order as it is
// now; it becomes CANCELLED once refunded and released.
func (h *HTTP) cancel(w http.ResponseWriter, r *http.Request) {
	caller, id, ok := orderRequest(w, r)
	if !ok {
		return
	}
	o, err := h.Cancel.Cancel(r.Context(), app.CancelOrder{OrderID: id, CustomerID: caller.Subject, Admin: caller.HasRole("admin")})
	if errors.Is(err, domain.ErrInvalidTransition) {
		web.Error(w, r, http.StatusConflict, "the order has shipped and can no longer be cancelled")
		return
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/api/orders/"+o.ID())
	web.WriteJSON(w, http.StatusAccepted, toJSON(o))
}

// fail maps errors to problems, in one place.
func (h *HTTP) fail(w http.ResponseWriter, r *http.Request, err error) {
	var (
		invalid *domain.ValidationError
		short   *app.OutOfStockError
	)
	switch {
	case errors.As(err, &invalid):
		fields := make([]web.FieldError, len(invalid.Fields))
		for i, f := range invalid.Fields {
			fields[i] = web.FieldError{Field: f.Field, Message: f.Message}
		}
		web.WriteProblem(w, r, web.Invalid(fields...))
	case errors.As(err, &short):
		p := web.NewProblem(http.StatusConflict, "not enough stock for the order")
		p.Title = "Out of stock"
		for _, id := range short.ProductIDs {
			p.Errors = append(p.Errors, web.FieldError{Field: "items", Message: "product " + id + " has fewer units than ordered"})
		}
		web.WriteProblem(w, r, p)
	case errors.Is(err, domain.ErrIdempotencyMismatch):
		web.Error(w, r, http.StatusUnprocessableEntity, "this Idempotency-Key was used with a different request")
	case errors.Is(err, domain.ErrNotFound):
		web.Error(w, r, http.StatusNotFound, "no such order")
	default:
		h.Logger.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		web.Error(w, r, http.StatusInternalServerError, "")
	}
}

package adapters

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/mercato-shop/mercato/platform/web"
	"github.com/mercato-shop/mercato/services/customer/app"
	"github.com/mercato-shop/mercato/services/customer/domain"
)

type registerer interface {
	Handle(ctx context.Context, cmd app.Register) (*domain.Customer, error)
}

type loginer interface {
	Handle(ctx context.Context, email, password string) (app.Token, error)
}

type customerByID interface {
	ByID(ctx context.Context, id string) (*domain.Customer, error)
}

type orderHistory interface {
	RecentOrders(ctx context.Context, customerID string, n int) ([]domain.OrderSummary, error)
}

// recentOrdersShown is how many orders of the history GET /api/customers/me shows.
const recentOrdersShown = 5

// HTTP serves the customer context's REST endpoints.
type HTTP struct {
	Register    registerer
	Login       loginer
	ClientToken clientTokenIssuing
	Query       customerByID
	History     orderHistory
	JWKS        []byte
	Logger      *slog.Logger
}

// Routes adds the endpoints to mux.
func (h *HTTP) Routes(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/customers", h.register)
	mux.HandleFunc("POST /api/auth/login", h.login)
	// Any method: the handler answers others with an RFC 6749 error, where
	// the mux would answer a plain-text 405.
	mux.HandleFunc("/oauth/token", h.token)
	mux.HandleFunc("GET /api/customers/me", h.me)
	mux.HandleFunc("GET /.well-known/jwks.json", h.jwks)
}

type customerJSON struct {
	ID        string    `json:"id"`
	Email     string    `json:"email"`
	Name      string    `json:"name"`
	Roles     []string  `json:"roles,omitempty"`
	CreatedAt time.Time `json:"created_at,omitzero"`
}

// meJSON is the caller's account with its latest orders, newest first.
type meJSON struct {
	customerJSON
	RecentOrders []orderSummaryJSON `json:"recent_orders"` // [] when there are none
}

type orderSummaryJSON struct {
	ID        string    `json:"id"`
	Status    string    `json:"status"`
	Reason    string    `json:"reason,omitempty"`
	Total     moneyJSON `json:"total"`
	ItemCount int64     `json:"item_count"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

type moneyJSON struct {
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
}

func (h *HTTP) register(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Email    string `json:"email"`
		Name     string `json:"name"`
		Password string `json:"password"`
	}
	if p := web.Decode(w, r, &req, 64<<10); p != nil {
		web.WriteProblem(w, r, p)
		return
	}
	c, err := h.Register.Handle(r.Context(), app.Register{Email: req.Email, Name: req.Name, Password: req.Password})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	web.WriteJSON(w, http.StatusCreated, customerJSON{ID: c.ID(), Email: c.Email(), Name: c.Name()})
}

func (h *HTTP) login(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Email    string `json:"email"`
		Password string `json:"password"`
	}
	if p := web.Decode(w, r, &req, 64<<10); p != nil {
		web.WriteProblem(w, r, p)
		return
	}
	t, err := h.Login.Handle(r.Context(), req.Email, req.Password)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	web.WriteJSON(w, http.StatusOK, map[string]any{
		"access_token": t.AccessToken,
		"token_type":   "Bearer",
		"expires_in":   int(t.ExpiresIn.Seconds()),
	})
}

func (h *HTTP) me(w http.ResponseWriter, r *http.Request) {
	caller, ok := web.CallerOf(r)
	if !ok {
		web.Error(w, r, http.StatusUnauthorized, "sign in first")
		return
	}
	c, err := h.Query.ByID(r.Context(), caller.Subject)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	orders, err := h.History.RecentOrders(r.Context(), c.ID(), recentOrdersShown)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	me := meJSON{
		customerJSON: customerJSON{ID: c.ID(), Email: c.Email(), Name: c.Name(), Roles: c.Roles(), CreatedAt: c.CreatedAt()},
		RecentOrders: make([]orderSummaryJSON, len(orders)),
	}
	for i, o := range orders {
		me.RecentOrders[i] = orderSummaryJSON{
			ID: o.ID, Status: string(o.Status), Reason: o.Reason,
			Total:     moneyJSON{Amount: o.Total.Amount, Currency: o.Total.Currency},
			ItemCount: o.ItemCount, CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt,
		}
	}
	web.WriteJSON(w, http.StatusOK, me)
}

func (h *HTTP) jwks(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(h.JWKS)
}

// fail maps domain errors to problems, in one place.
func (h *HTTP) fail(w http.ResponseWriter, r *http.Request, err error) {
	var invalid *domain.ValidationError
	switch {
	case errors.As(err, &invalid):
		fields := make([]web.FieldError, len(invalid.Fields))
		for i, f := range invalid.Fields {
			fields[i] = web.FieldError{Field: f.Field, Message: f.Message}
		}
		web.WriteProblem(w, r, web.Invalid(fields...))
	case errors.Is(err, domain.ErrEmailTaken):
		web.Error(w, r, http.StatusConflict, "a customer with this email is already registered")
	case errors.Is(err, domain.ErrInvalidCredentials):
		web.Error(w, r, http.StatusUnauthorized, "invalid email or password")
	case errors.Is(err, domain.ErrNotFound):
		web.Error(w, r, http.StatusNotFound, "no such customer")
	default:
		h.Logger.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		web.Error(w, r, http.StatusInternalServerError, "")
	}
}

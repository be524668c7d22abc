package adapters

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/mercato-shop/mercato/platform/web"
	"github.com/mercato-shop/mercato/services/payment/app"
	"github.com/mercato-shop/mercato/services/payment/domain"
)

// roleAdmin is the role that sees every customer's payments.
const roleAdmin = "admin"

type orderPaymentsQuery interface {
	Handle(ctx context.Context, orderID string, v app.Viewer) ([]*domain.Payment, error)
}

// HTTP serves the customers' view of their payments.
type HTTP struct {
	Payments orderPaymentsQuery
	Logger   *slog.Logger
}

// Routes adds the endpoints to mux.
func (h *HTTP) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/payments", h.list)
}

type moneyJSON struct {
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
}

type paymentJSON struct {
	ID        string    `json:"id"`
	OrderID   string    `json:"order_id"`
	Amount    moneyJSON `json:"amount"`
	Status    string    `json:"status"`
	Reason    string    `json:"reason,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// list answers GET /api/payments?order_id=: the payments of the caller's
// order; another customer's order answers an empty list.
func (h *HTTP) list(w http.ResponseWriter, r *http.Request) {
	caller, ok := web.CallerOf(r)
	if !ok {
		web.Error(w, r, http.StatusUnauthorized, "sign in first")
		return
	}
	orderID := r.URL.Query().Get("order_id")
	if _, err := uuid.Parse(orderID); err != nil {
		web.WriteProblem(w, r, web.Invalid(web.FieldError{Field: "order_id", Message: "is required and must be a UUID"}))
		return
	}
	ps, err := h.Payments.Handle(r.Context(), orderID, app.Viewer{CustomerID: caller.Subject, Admin: caller.HasRole(roleAdmin)})
	if err != nil {
		h.Logger.ErrorContext(r.Context(), "list payments", "order_id", orderID, "err", err)
		web.Error(w, r, http.StatusInternalServerError, "")
		return
	}
	out := make([]paymentJSON, len(ps))
	for i, p := range ps {
		out[i] = paymentJSON{
			ID: p.ID(), OrderID: p.OrderID(), Amount: moneyJSON{p.Amount().Amount, p.Amount().Currency},
			Status: string(p.Status()), Reason: p.Reason(), CreatedAt: p.CreatedAt(),
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	web.WriteJSON(w, http.StatusOK, out)
}

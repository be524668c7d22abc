package adapters

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/google/uuid"

	"github.com/mercato-shop/mercato/platform/web"
	"github.com/mercato-shop/mercato/services/inventory/domain"
)

type catalog interface {
	Products(ctx context.Context, ids ...string) ([]domain.Product, error)
	Product(ctx context.Context, id string) (domain.Product, error)
}

// HTTP serves the public catalog.
type HTTP struct {
	Catalog catalog
	Logger  *slog.Logger
}

// Routes adds the endpoints to mux.
func (h *HTTP) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/products", h.list)
	mux.HandleFunc("GET /api/products/{id}", h.get)
}

type moneyJSON struct {
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
}

type productJSON struct {
	ID        string    `json:"id"`
	SKU       string    `json:"sku"`
	Name      string    `json:"name"`
	Price     moneyJSON `json:"price"`
	Available int64     `json:"available"`
}

func toJSON(p domain.Product) productJSON {
	return productJSON{ID: p.ID, SKU: p.SKU, Name: p.Name, Price: moneyJSON{p.Price.Amount, p.Price.Currency}, Available: p.Available}
}

func (h *HTTP) list(w http.ResponseWriter, r *http.Request) {
	ps, err := h.Catalog.Products(r.Context())
	if err != nil {
		h.Logger.ErrorContext(r.Context(), "list products", "err", err)
		web.Error(w, r, http.StatusInternalServerError, "")
		return
	}
	out := make([]productJSON, len(ps))
	for i, p := range ps {
		out[i] = toJSON(p)
	}
	web.WriteJSON(w, http.StatusOK, out)
}

func (h *HTTP) get(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := uuid.Parse(id); err != nil {
		web.WriteProblem(w, r, web.Invalid(web.FieldError{Field: "id", Message: "must be a UUID"}))
		return
	}
	p, err := h.Catalog.Product(r.Context(), id)
	if errors.Is(err, domain.ErrNotFound) {
		web.Error(w, r, http.StatusNotFound, "no product with id "+id)
		return
	}
	if err != nil {
		h.Logger.ErrorContext(r.Context(), "get product", "id", id, "err", err)
		web.Error(w, r, http.StatusInternalServerError, "")
		return
	}
	web.WriteJSON(w, http.StatusOK, toJSON(p))
}

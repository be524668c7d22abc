package adapters

import (
	"github.com/google/uuid"

	"github.com/mercato-shop/mercato/services/inventory/domain"
)

// Catalog is the shop's first catalog, seeded into an empty database. Stock
// is deep enough for demos and benchmarks, except one product kept nearly
// sold out for out-of-stock demos.
func Catalog() []domain.Product {
	items := []struct {
		sku, name string
		cents     int64
		stock     int64
	}{
		{"MUG-001", "Enamel camp mug", 1450, 5000},
		{"TEE-001", "Organic cotton tee", 2400, 5000},
		{"HAT-001", "Wool beanie", 1900, 5000},
		{"BAG-001", "Canvas tote bag", 1600, 5000},
		{"BTL-001", "Steel water bottle", 2900, 5000},
		{"NTB-001", "Dot-grid notebook", 1200, 5000},
		{"PEN-001", "Brass pen", 3400, 5000},
		{"SOK-001", "Merino socks", 1500, 5000},
		{"CAP-001", "Baseball cap", 2200, 5000},
		{"HDY-001", "Heavyweight hoodie", 6400, 5000},
		{"STK-001", "Sticker pack", 500, 5000},
		{"PST-001", "Risograph poster", 2800, 5000},
		{"LMP-001", "Walnut desk lamp", 12900, 1000},
		{"KBD-001", "Limited edition keyboard", 18900, 3},
	}
	out := make([]domain.Product, len(items))
	for i, it := range items {
		out[i] = domain.Product{
			ID:        uuid.Must(uuid.NewV7()).String(),
			SKU:       it.sku,
			Name:      it.name,
			Price:     domain.Money{Amount: it.cents, Currency: "EUR"},
			Available: it.stock,
		}
	}
	return out
}

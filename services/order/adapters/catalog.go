package adapters

import (
	"context"
	"fmt"

	"connectrpc.com/connect"

	inventoryv1 "github.com/mercato-shop/mercato/api/gen/inventory/v1"
	"github.com/mercato-shop/mercato/api/gen/inventory/v1/inventoryv1connect"
	"github.com/mercato-shop/mercato/platform/resilience"
	"github.com/mercato-shop/mercato/services/order/app"
	"github.com/mercato-shop/mercato/services/order/domain"
)

// Catalog asks inventory, over RPC, for the products of an order: a query,
// so synchronous (DESIGN.md, "Commands versus queries").
type Catalog struct {
	Client inventoryv1connect.InventoryServiceClient
}

// Products returns the known products among ids, by id.
func (c *Catalog) Products(ctx context.Context, ids []string) (map[string]app.Product, error) {
	// A read: safe to send again when an attempt fails (platform/resilience).
	resp, err := c.Client.ListProducts(resilience.Idempotent(ctx), connect.NewRequest(&inventoryv1.ListProductsRequest{Ids: ids}))
	if err != nil {
		return nil, fmt.Errorf("inventory ListProducts: %w", err)
	}
	out := make(map[string]app.Product, len(resp.Msg.GetProducts()))
	for _, p := range resp.Msg.GetProducts() {
		out[p.GetId()] = app.Product{
			ID:        p.GetId(),
			Name:      p.GetName(),
			Price:     domain.Money{Amount: p.GetPrice().GetAmount(), Currency: p.GetPrice().GetCurrency()},
			Available: p.GetAvailable(),
		}
	}
	return out, nil
}

package adapters

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	inventoryv1 "github.com/mercato-shop/mercato/api/gen/inventory/v1"
	moneyv1 "github.com/mercato-shop/mercato/api/gen/money/v1"
	"github.com/mercato-shop/mercato/services/inventory/domain"
)

// RPC serves inventoryv1.InventoryService.
type RPC struct {
	Catalog catalog
}

func toProto(p domain.Product) *inventoryv1.Product {
	return &inventoryv1.Product{
		Id: p.ID, Sku: p.SKU, Name: p.Name,
		Price:     &moneyv1.Money{Amount: p.Price.Amount, Currency: p.Price.Currency},
		Available: p.Available,
	}
}

// GetProduct implements inventoryv1connect.InventoryServiceHandler.
func (s *RPC) GetProduct(ctx context.Context, req *connect.Request[inventoryv1.GetProductRequest]) (*connect.Response[inventoryv1.GetProductResponse], error) {
	if req.Msg.GetId() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("id is required"))
	}
	p, err := s.Catalog.Product(ctx, req.Msg.GetId())
	if errors.Is(err, domain.ErrNotFound) {
		return nil, connect.NewError(connect.CodeNotFound, err)
	}
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	return connect.NewResponse(&inventoryv1.GetProductResponse{Product: toProto(p)}), nil
}

// ListProducts implements inventoryv1connect.InventoryServiceHandler. Ids
// that match no product are left out of the answer.
func (s *RPC) ListProducts(ctx context.Context, req *connect.Request[inventoryv1.ListProductsRequest]) (*connect.Response[inventoryv1.ListProductsResponse], error) {
	if len(req.Msg.GetIds()) > 500 {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("at most 500 ids"))
	}
	ps, err := s.Catalog.Products(ctx, req.Msg.GetIds()...)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	out := make([]*inventoryv1.Product, len(ps))
	for i, p := range ps {
		out[i] = toProto(p)
	}
	return connect.NewResponse(&inventoryv1.ListProductsResponse{Products: out}), nil
}

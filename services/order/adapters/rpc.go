package adapters

import (
	"context"
	"errors"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	orderv1 "github.com/mercato-shop/mercato/api/gen/order/v1"
	"github.com/mercato-shop/mercato/services/order/domain"
)

// RPC serves orderv1.OrderService.
type RPC struct {
	Orders orderReader
}

// GetOrder implements orderv1connect.OrderServiceHandler.
func (s *RPC) GetOrder(ctx context.Context, req *connect.Request[orderv1.GetOrderRequest]) (*connect.Response[orderv1.GetOrderResponse], error) {
	if req.Msg.GetId() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("id is required"))
	}
	o, err := s.Orders.Order(ctx, req.Msg.GetId())
	if errors.Is(err, domain.ErrNotFound) {
		return nil, connect.NewError(connect.CodeNotFound, err)
	}
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	return connect.NewResponse(&orderv1.GetOrderResponse{Order: &orderv1.Order{
		Id: o.ID(), CustomerId: o.CustomerID(), Status: string(o.Status()), Reason: o.Reason(),
		Items: lines(o.Lines()), Total: money(o.Total()), Saga: o.Saga(), Version: o.Version(),
		CreatedAt: timestamppb.New(o.CreatedAt()), UpdatedAt: timestamppb.New(o.UpdatedAt()),
	}}), nil
}

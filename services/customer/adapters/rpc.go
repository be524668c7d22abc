package adapters

import (
	"context"
	"errors"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	customerv1 "github.com/mercato-shop/mercato/api/gen/customer/v1"
	"github.com/mercato-shop/mercato/services/customer/domain"
)

// RPC serves customerv1.CustomerService.
type RPC struct {
	Query customerByID
}

// GetCustomer implements customerv1connect.CustomerServiceHandler.
func (s *RPC) GetCustomer(ctx context.Context, req *connect.Request[customerv1.GetCustomerRequest]) (*connect.Response[customerv1.GetCustomerResponse], error) {
	if req.Msg.GetId() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("id is required"))
	}
	c, err := s.Query.ByID(ctx, req.Msg.GetId())
	if errors.Is(err, domain.ErrNotFound) {
		return nil, connect.NewError(connect.CodeNotFound, err)
	}
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	return connect.NewResponse(&customerv1.GetCustomerResponse{Customer: &customerv1.Customer{
		Id:        c.ID(),
		Email:     c.Email(),
		Name:      c.Name(),
		Roles:     c.Roles(),
		CreatedAt: timestamppb.New(c.CreatedAt()),
	}}), nil
}

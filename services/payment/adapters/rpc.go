package adapters

import (
	"context"
	"errors"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	paymentv1 "github.com/mercato-shop/mercato/api/gen/payment/v1"
	"github.com/mercato-shop/mercato/services/payment/domain"
)

type paymentReader interface {
	ByID(ctx context.Context, id string) (*domain.Payment, error)
	ListByOrder(ctx context.Context, orderID string) ([]*domain.Payment, error)
}

// RPC serves paymentv1.PaymentService to the other services. It checks no
// caller: internal callers only, who do their own access control.
type RPC struct {
	Payments paymentReader
}

func toProto(p *domain.Payment) *paymentv1.Payment {
	return &paymentv1.Payment{
		Id: p.ID(), OrderId: p.OrderID(), CustomerId: p.CustomerID(), Amount: toMoney(p.Amount()),
		Status: string(p.Status()), Reason: p.Reason(),
		CreatedAt: timestamppb.New(p.CreatedAt()), UpdatedAt: timestamppb.New(p.UpdatedAt()),
	}
}

// GetPayment implements paymentv1connect.PaymentServiceHandler.
func (s *RPC) GetPayment(ctx context.Context, req *connect.Request[paymentv1.GetPaymentRequest]) (*connect.Response[paymentv1.GetPaymentResponse], error) {
	if req.Msg.GetId() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("id is required"))
	}
	p, err := s.Payments.ByID(ctx, req.Msg.GetId())
	if errors.Is(err, domain.ErrNotFound) {
		return nil, connect.NewError(connect.CodeNotFound, err)
	}
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	return connect.NewResponse(&paymentv1.GetPaymentResponse{Payment: toProto(p)}), nil
}

// ListPayments implements paymentv1connect.PaymentServiceHandler.
func (s *RPC) ListPayments(ctx context.Context, req *connect.Request[paymentv1.ListPaymentsRequest]) (*connect.Response[paymentv1.ListPaymentsResponse], error) {
	if req.Msg.GetOrderId() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("order_id is required"))
	}
	ps, err := s.Payments.ListByOrder(ctx, req.Msg.GetOrderId())
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	out := make([]*paymentv1.Payment, len(ps))
	for i, p := range ps {
		out[i] = toProto(p)
	}
	return connect.NewResponse(&paymentv1.ListPaymentsResponse{Payments: out}), nil
}

package adapters

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	customerv1 "github.com/mercato-shop/mercato/api/gen/customer/v1"
	moneyv1 "github.com/mercato-shop/mercato/api/gen/money/v1"
	orderv1 "github.com/mercato-shop/mercato/api/gen/order/v1"
	paymentv1 "github.com/mercato-shop/mercato/api/gen/payment/v1"
	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/services/orderview/domain"
)

// The streams the read models are fed from, as their owners declare them.
const (
	StreamOrder    = "ORDER"
	StreamPayment  = "PAYMENT"
	StreamCustomer = "CUSTOMER"
)

// Event types the read models use.
const (
	orderCreated       = "order.created"
	orderConfirmed     = "order.confirmed"
	orderCancelled     = "order.cancelled"
	orderShipped       = "order.shipped"
	paymentCompleted   = "payment.completed"
	paymentFailed      = "payment.failed"
	paymentRefunded    = "payment.refunded"
	customerRegistered = "customer.registered"
	customerUpdated    = "customer.updated"
)

// decode turns a record into the domain event it carries: an order event,
// a domain.PaymentEvent or a domain.CustomerNamed. ok is false for a type
// the read models do not use. A payload that does not decode, or names no
// order or customer, is an error wrapping bus.ErrPoison.
func decode(r bus.Record) (ev any, ok bool, err error) {
	switch r.Type {
	case orderCreated:
		var m orderv1.OrderCreated
		if err := unmarshal(r, &m, m.GetOrderId); err != nil {
			return nil, false, err
		}
		items := make([]domain.Line, len(m.GetItems()))
		for i, l := range m.GetItems() {
			items[i] = domain.Line{ProductID: l.GetProductId(), Name: l.GetName(), Quantity: int64(l.GetQuantity()), UnitPrice: money(l.GetUnitPrice())}
		}
		return domain.OrderCreated{
			OrderID: m.GetOrderId(), CustomerID: m.GetCustomerId(), Items: items, Total: money(m.GetTotal()),
			Saga: m.GetSaga(), CreatedAt: at(m.GetCreatedAt()), Version: m.GetVersion(),
		}, true, nil
	case orderConfirmed:
		var m orderv1.OrderConfirmed
		if err := unmarshal(r, &m, m.GetOrderId); err != nil {
			return nil, false, err
		}
		return domain.OrderConfirmed{OrderID: m.GetOrderId(), CustomerID: m.GetCustomerId(), ConfirmedAt: at(m.GetConfirmedAt()), Version: m.GetVersion()}, true, nil
	case orderCancelled:
		var m orderv1.OrderCancelled
		if err := unmarshal(r, &m, m.GetOrderId); err != nil {
			return nil, false, err
		}
		return domain.OrderCancelled{OrderID: m.GetOrderId(), CustomerID: m.GetCustomerId(), Reason: m.GetReason(), CancelledAt: at(m.GetCancelledAt()), Version: m.GetVersion()}, true, nil
	case orderShipped:
		var m orderv1.OrderShipped
		if err := unmarshal(r, &m, m.GetOrderId); err != nil {
			return nil, false, err
		}
		return domain.OrderShipped{OrderID: m.GetOrderId(), CustomerID: m.GetCustomerId(), Version: m.GetVersion(),
			Shipment: domain.Shipment{ID: m.GetShipmentId(), TrackingNumber: m.GetTrackingNumber(), ShippedAt: at(m.GetShippedAt())}}, true, nil
	case paymentCompleted:
		var m paymentv1.PaymentCompleted
		if err := unmarshal(r, &m, m.GetOrderId); err != nil {
			return nil, false, err
		}
		return domain.PaymentEvent{OrderID: m.GetOrderId(), Kind: domain.KindCompleted, Amount: money(m.GetAmount())}, true, nil
	case paymentFailed:
		var m paymentv1.PaymentFailed
		if err := unmarshal(r, &m, m.GetOrderId); err != nil {
			return nil, false, err
		}
		return domain.PaymentEvent{OrderID: m.GetOrderId(), Kind: domain.KindFailed, Reason: m.GetReason(), Amount: money(m.GetAmount())}, true, nil
	case paymentRefunded:
		var m paymentv1.PaymentRefunded
		if err := unmarshal(r, &m, m.GetOrderId); err != nil {
			return nil, false, err
		}
		return domain.PaymentEvent{OrderID: m.GetOrderId(), Kind: domain.KindRefunded, Amount: money(m.GetAmount())}, true, nil
	case customerRegistered:
		var m customerv1.CustomerRegistered
		if err := unmarshal(r, &m, m.GetCustomerId); err != nil {
			return nil, false, err
		}
		return domain.CustomerNamed{CustomerID: m.GetCustomerId(), Name: m.GetName(), At: at(m.GetRegisteredAt())}, true, nil
	case customerUpdated:
		var m customerv1.CustomerUpdated
		if err := unmarshal(r, &m, m.GetCustomerId); err != nil {
			return nil, false, err
		}
		return domain.CustomerNamed{CustomerID: m.GetCustomerId(), Name: m.GetName(), At: at(m.GetUpdatedAt())}, true, nil
	}
	return nil, false, nil
}

// unmarshal decodes r into m and checks that id() names what it is about.
func unmarshal(r bus.Record, m proto.Message, id func() string) error {
	if err := proto.Unmarshal(r.Data, m); err != nil {
		return fmt.Errorf("decode %s %s: %w: %w", r.Type, r.ID, bus.ErrPoison, err)
	}
	if id() == "" {
		return fmt.Errorf("%s %s names no order or customer: %w", r.Type, r.ID, bus.ErrPoison)
	}
	return nil
}

// at is a timestamp as the read models store it: UTC, to the microsecond,
// so a value read back equals the one applied; zero when absent.
func at(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime().Truncate(time.Microsecond)
}

// micros is t in unix microseconds for a BIGINT column, 0 for the zero time.
func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

// fromMicros reads what micros wrote.
func fromMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}

func money(m *moneyv1.Money) domain.Money {
	return domain.Money{Amount: m.GetAmount(), Currency: m.GetCurrency()}
}

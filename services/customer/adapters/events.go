package adapters

import (
	"google.golang.org/protobuf/types/known/timestamppb"

	customerv1 "github.com/mercato-shop/mercato/api/gen/customer/v1"
	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/services/customer/domain"
)

// Stream is where the customer context's events are kept.
func Stream() bus.Stream {
	return bus.Stream{Name: "CUSTOMER", Subjects: []string{"customer.>"}}
}

// Registered is the customer.registered event that announces c.
func Registered(c *domain.Customer) bus.Event {
	return bus.Event{
		Type:    "customer.registered",
		Subject: c.ID(),
		Time:    c.CreatedAt(),
		Data: &customerv1.CustomerRegistered{
			CustomerId:   c.ID(),
			Email:        c.Email(),
			Name:         c.Name(),
			RegisteredAt: timestamppb.New(c.CreatedAt()),
		},
	}
}

package adapters

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	inventoryv1 "github.com/mercato-shop/mercato/api/gen/inventory/v1"
	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/services/inventory/domain"
)

// Event and command names of the inventory context.
const (
	CmdReserve    = "inventory.cmd.reserve"
	CmdRelease    = "inventory.cmd.release"
	EventReserved = "inventory.reserved"
	EventFailed   = "inventory.failed"
	EventReleased = "inventory.released"
)

// EventStream keeps the events inventory publishes.
func EventStream() bus.Stream {
	return bus.Stream{Name: "INVENTORY", Subjects: []string{EventReserved, EventFailed, EventReleased}}
}

// CommandStream is inventory's command queue: each command is consumed once.
func CommandStream() bus.Stream {
	return bus.Stream{Name: "INVENTORY_COMMANDS", Subjects: []string{"inventory.cmd.>"}, WorkQueue: true}
}

// CommandConsumer is the durable consumer of the command queue, shared by
// every inventory instance.
func CommandConsumer() bus.Consumer {
	return bus.Consumer{Stream: "INVENTORY_COMMANDS", Durable: "inventory-commands"}
}

// eventIDSpace is the namespace of answer ids: an answer's id derives from
// the order and the event type, so the answer to a command redelivered after
// a crash has the same id, and the outbox and the broker (Nats-Msg-Id
// dedupe) drop the duplicate.
const eventIDSpace = "6f1d9b7e-2f5c-4a35-9a0e-5b0e6f1c2d3a"

// ReleaseAnswer answers a release command, always with inventory.released
// as the command's contract says: with the lines given back, or none when
// nothing was held (never reserved, or a reservation that had failed).
// Answering a failed reservation's release with inventory.failed would
// reuse that failure's event id, and the broker would drop it as a
// duplicate: the saga waiting for the release would never hear back.
func ReleaseAnswer(r domain.Reservation) bus.Event {
	if r.Status != domain.Released {
		r = domain.Reservation{OrderID: r.OrderID, Status: domain.Released}
	}
	return Answer(r)
}

// Answer is the event that announces a reservation's outcome:
// inventory.reserved, inventory.failed or inventory.released.
func Answer(r domain.Reservation) bus.Event {
	var ev bus.Event
	switch r.Status {
	case domain.Held:
		ev = bus.Event{Type: EventReserved, Data: &inventoryv1.StockReserved{OrderId: r.OrderID, Lines: toLines(r.Lines)}}
	case domain.Failed:
		ev = bus.Event{Type: EventFailed, Data: &inventoryv1.StockReservationFailed{OrderId: r.OrderID, Reason: r.Reason, ProductId: r.ProductID}}
	case domain.Released:
		ev = bus.Event{Type: EventReleased, Data: &inventoryv1.StockReleased{OrderId: r.OrderID, Lines: toLines(r.Lines)}}
	}
	ev.Subject = r.OrderID
	ev.ID = uuid.NewSHA1(uuid.MustParse(eventIDSpace), []byte(ev.Type+"/"+r.OrderID)).String()
	return ev
}

func toLines(lines []domain.Line) []*inventoryv1.Line {
	out := make([]*inventoryv1.Line, len(lines))
	for i, l := range lines {
		out[i] = &inventoryv1.Line{ProductId: l.ProductID, Quantity: int32(l.Quantity)}
	}
	return out
}

func fromLines(lines []*inventoryv1.Line) []domain.Line {
	out := make([]domain.Line, len(lines))
	for i, l := range lines {
		out[i] = domain.Line{ProductID: l.GetProductId(), Quantity: int64(l.GetQuantity())}
	}
	return out
}

type reserveHandler interface {
	Handle(ctx context.Context, orderID string, lines []domain.Line) (domain.Reservation, error)
}

type releaseHandler interface {
	Handle(ctx context.Context, orderID string) (domain.Reservation, error)
}

// Commands handles the command queue. A command is acknowledged only after
// its effect and its answer are committed (the outbox relay publishes the
// answer); a failure leaves it for redelivery, which the idempotent handlers
// make safe.
type Commands struct {
	Reserve reserveHandler
	Release releaseHandler
}

// Handlers routes commands by type.
func (c *Commands) Handlers() bus.Handlers {
	return bus.Handlers{
		CmdReserve: bus.On(func(ctx context.Context, _ bus.Message, cmd *inventoryv1.ReserveStock) error {
			_, err := c.Reserve.Handle(ctx, cmd.GetOrderId(), fromLines(cmd.GetLines()))
			return poison(err)
		}),
		CmdRelease: bus.On(func(ctx context.Context, _ bus.Message, cmd *inventoryv1.ReleaseStock) error {
			_, err := c.Release.Handle(ctx, cmd.GetOrderId())
			return poison(err)
		}),
	}
}

// poison marks a command that can never succeed, so it is not redelivered.
func poison(err error) error {
	if errors.Is(err, domain.ErrInvalidReservation) {
		return fmt.Errorf("%w: %w", bus.ErrPoison, err)
	}
	return err
}

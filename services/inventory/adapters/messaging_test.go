package adapters

import (
	"testing"

	"github.com/mercato-shop/mercato/services/inventory/domain"
)

// A release is always answered with inventory.released, and never with the
// id of the order's earlier inventory.failed, which the broker would drop.
func TestReleaseAnswer_IsAlwaysReleased(t *testing.T) {
	failed := domain.Reservation{OrderID: "o1", Status: domain.Failed, Reason: domain.ReasonOutOfStock}
	ev := ReleaseAnswer(failed)
	if ev.Type != EventReleased || ev.Subject != "o1" {
		t.Fatalf("release of a failed reservation answered %s", ev.Type)
	}
	if ev.ID == Answer(failed).ID {
		t.Fatal("the release answer reuses the failure's event id")
	}
	held := domain.Reservation{OrderID: "o2", Status: domain.Released, Lines: []domain.Line{{ProductID: "p", Quantity: 2}}}
	if got := ReleaseAnswer(held); got.ID != Answer(held).ID || got.Type != EventReleased {
		t.Fatalf("release of a held reservation: %+v", got)
	}
}

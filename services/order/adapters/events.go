package adapters

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/mercato-shop/mercato/platform/eventstore"
	"github.com/mercato-shop/mercato/services/order/domain"
)

// How order events are stored: JSON, one schema version per type. A stored
// event is never rewritten; when a payload's shape changes, its schema
// version goes up and an upcaster turns the old shape into the new on read
// (Upcasters), so the code below only ever decodes the current one.
//
// Evolutions so far:
//   - order.created 1 -> 2: schema 1 held amounts without a currency (the
//     shop sold in euros only); schema 2 holds money as {amount, currency}.
const (
	schemaCreated   = 2
	schemaConfirmed = 1
	schemaCancelled = 1
	schemaShipped   = 1
)

// legacyCurrency is the currency of order.created schema 1 payloads.
const legacyCurrency = "EUR"

type moneyData struct {
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
}

type lineData struct {
	ProductID string    `json:"product_id"`
	Name      string    `json:"name"`
	Quantity  int64     `json:"quantity"`
	UnitPrice moneyData `json:"unit_price"`
}

func toMoneyData(m domain.Money) moneyData { return moneyData{m.Amount, m.Currency} }

func (m moneyData) money() domain.Money { return domain.Money{Amount: m.Amount, Currency: m.Currency} }

func toLineData(ls []domain.Line) []lineData {
	out := make([]lineData, len(ls))
	for i, l := range ls {
		out[i] = lineData{l.ProductID, l.Name, l.Quantity, toMoneyData(l.UnitPrice)}
	}
	return out
}

func fromLineData(items []lineData) []domain.Line {
	out := make([]domain.Line, len(items))
	for i, it := range items {
		out[i] = domain.Line{ProductID: it.ProductID, Name: it.Name, Quantity: it.Quantity, UnitPrice: it.UnitPrice.money()}
	}
	return out
}

// decodeEvents decodes stored events in order.
func decodeEvents(stored []eventstore.Event) ([]domain.Event, error) {
	out := make([]domain.Event, len(stored))
	for i, se := range stored {
		var err error
		if out[i], err = decodeEvent(se); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// createdData is order.created, schema 2.
type createdData struct {
	CustomerID string     `json:"customer_id"`
	Items      []lineData `json:"items"`
	Total      moneyData  `json:"total"`
	Saga       string     `json:"saga"`
}

// createdDataV1 is order.created, schema 1.
type createdDataV1 struct {
	CustomerID string `json:"customer_id"`
	Items      []struct {
		ProductID  string `json:"product_id"`
		Name       string `json:"name"`
		Quantity   int64  `json:"quantity"`
		UnitAmount int64  `json:"unit_amount"`
	} `json:"items"`
	TotalAmount int64  `json:"total_amount"`
	Saga        string `json:"saga"`
}

type cancelledData struct {
	Reason string `json:"reason"`
}

type shippedData struct {
	ShipmentID     string `json:"shipment_id"`
	TrackingNumber string `json:"tracking_number"`
}

// Upcasters bring stored order events to their current schema.
func Upcasters() []eventstore.Upcaster {
	return []eventstore.Upcaster{{Type: domain.TypeCreated, From: 1, Up: createdV1ToV2}}
}

func createdV1ToV2(data []byte) ([]byte, error) {
	var v1 createdDataV1
	if err := json.Unmarshal(data, &v1); err != nil {
		return nil, err
	}
	v2 := createdData{CustomerID: v1.CustomerID, Saga: v1.Saga, Total: moneyData{v1.TotalAmount, legacyCurrency}}
	for _, it := range v1.Items {
		v2.Items = append(v2.Items, lineData{it.ProductID, it.Name, it.Quantity, moneyData{it.UnitAmount, legacyCurrency}})
	}
	return json.Marshal(v2)
}

// encodeEvent turns a domain event into what the store appends. The id is
// the one the event is published with.
func encodeEvent(orderID string, e domain.Event) (eventstore.NewEvent, error) {
	var (
		payload any
		schema  int
	)
	switch e := e.(type) {
	case domain.OrderCreated:
		payload, schema = createdData{CustomerID: e.CustomerID, Items: toLineData(e.Lines), Total: toMoneyData(e.Total), Saga: e.Saga}, schemaCreated
	case domain.OrderConfirmed:
		payload, schema = struct{}{}, schemaConfirmed
	case domain.OrderCancelled:
		payload, schema = cancelledData{Reason: e.Reason}, schemaCancelled
	case domain.OrderShipped:
		payload, schema = shippedData{ShipmentID: e.ShipmentID, TrackingNumber: e.TrackingNumber}, schemaShipped
	default:
		return eventstore.NewEvent{}, fmt.Errorf("encode order event: unknown %T", e)
	}
	data, err := json.Marshal(payload)
	if err != nil {
		return eventstore.NewEvent{}, fmt.Errorf("encode %s: %w", e.Type(), err)
	}
	return eventstore.NewEvent{ID: eventID(orderID, e.Type()), Type: e.Type(), Schema: schema, Data: data, At: e.When()}, nil
}

// decodeEvent turns a stored event, upcast to its current schema, back into
// a domain event.
func decodeEvent(se eventstore.Event) (domain.Event, error) {
	at := se.RecordedAt
	fail := func(err error) (domain.Event, error) {
		return nil, fmt.Errorf("decode %s v%d of order %s: %w", se.Type, se.Version, se.Stream, err)
	}
	switch se.Type {
	case domain.TypeCreated:
		if se.Schema != schemaCreated {
			return fail(fmt.Errorf("schema %d, want %d", se.Schema, schemaCreated))
		}
		var d createdData
		if err := json.Unmarshal(se.Data, &d); err != nil {
			return fail(err)
		}
		return domain.OrderCreated{CustomerID: d.CustomerID, Lines: fromLineData(d.Items), Saga: d.Saga, At: at,
			Total: d.Total.money()}, nil
	case domain.TypeConfirmed:
		return domain.OrderConfirmed{At: at}, nil
	case domain.TypeCancelled:
		var d cancelledData
		if err := json.Unmarshal(se.Data, &d); err != nil {
			return fail(err)
		}
		return domain.OrderCancelled{Reason: d.Reason, At: at}, nil
	case domain.TypeShipped:
		var d shippedData
		if err := json.Unmarshal(se.Data, &d); err != nil {
			return fail(err)
		}
		return domain.OrderShipped{ShipmentID: d.ShipmentID, TrackingNumber: d.TrackingNumber, At: at}, nil
	}
	return fail(fmt.Errorf("unknown type"))
}

// snapshotSchema versions the snapshot encoding; a snapshot of another
// schema is ignored and the order replayed from its events.
const snapshotSchema = 1

type shipmentData struct {
	ID             string    `json:"id"`
	TrackingNumber string    `json:"tracking_number"`
	ShippedAt      time.Time `json:"shipped_at"`
}

type snapshotData struct {
	CustomerID string        `json:"customer_id"`
	Status     string        `json:"status"`
	Reason     string        `json:"reason,omitempty"`
	Items      []lineData    `json:"items"`
	Total      moneyData     `json:"total"`
	Saga       string        `json:"saga"`
	Shipment   *shipmentData `json:"shipment,omitempty"`
	CreatedAt  time.Time     `json:"created_at"`
	UpdatedAt  time.Time     `json:"updated_at"`
}

// micro is t as the event store keeps times, so an order read from a
// snapshot equals the same order replayed from its events.
func micro(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

func encodeSnapshot(o *domain.Order) (eventstore.Snapshot, error) {
	d := snapshotData{CustomerID: o.CustomerID(), Status: string(o.Status()), Reason: o.Reason(), Saga: o.Saga(),
		Items: toLineData(o.Lines()), Total: toMoneyData(o.Total()), CreatedAt: micro(o.CreatedAt()), UpdatedAt: micro(o.UpdatedAt())}
	if sh := o.Shipment(); sh.ID != "" {
		d.Shipment = &shipmentData{sh.ID, sh.TrackingNumber, micro(sh.ShippedAt)}
	}
	data, err := json.Marshal(d)
	if err != nil {
		return eventstore.Snapshot{}, fmt.Errorf("snapshot order %s: %w", o.ID(), err)
	}
	return eventstore.Snapshot{Stream: o.ID(), Version: o.Version(), Schema: snapshotSchema, Data: data}, nil
}

func decodeSnapshot(s eventstore.Snapshot) (*domain.Order, bool, error) {
	if s.Schema != snapshotSchema {
		return nil, false, nil
	}
	var d snapshotData
	if err := json.Unmarshal(s.Data, &d); err != nil {
		return nil, false, fmt.Errorf("decode snapshot of order %s: %w", s.Stream, err)
	}
	var sh domain.Shipment
	if d.Shipment != nil {
		sh = domain.Shipment{ID: d.Shipment.ID, TrackingNumber: d.Shipment.TrackingNumber, ShippedAt: d.Shipment.ShippedAt}
	}
	return domain.Restore(s.Stream, d.CustomerID, domain.Status(d.Status), d.Reason, fromLineData(d.Items),
		d.Total.money(), d.Saga, sh, s.Version, d.CreatedAt, d.UpdatedAt), true, nil
}

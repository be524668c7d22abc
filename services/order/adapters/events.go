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
		d := createdData{CustomerID: e.CustomerID, Total: moneyData{e.Total.Amount, e.Total.Currency}, Saga: e.Saga}
		for _, l := range e.Lines {
			d.Items = append(d.Items, lineData{l.ProductID, l.Name, l.Quantity, moneyData{l.UnitPrice.Amount, l.UnitPrice.Currency}})
		}
		payload, schema = d, schemaCreated
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
		lines := make([]domain.Line, len(d.Items))
		for i, it := range d.Items {
			lines[i] = domain.Line{ProductID: it.ProductID, Name: it.Name, Quantity: it.Quantity,
				UnitPrice: domain.Money{Amount: it.UnitPrice.Amount, Currency: it.UnitPrice.Currency}}
		}
		return domain.OrderCreated{CustomerID: d.CustomerID, Lines: lines, Saga: d.Saga, At: at,
			Total: domain.Money{Amount: d.Total.Amount, Currency: d.Total.Currency}}, nil
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

type snapshotData struct {
	CustomerID string     `json:"customer_id"`
	Status     string     `json:"status"`
	Reason     string     `json:"reason,omitempty"`
	Items      []lineData `json:"items"`
	Total      moneyData  `json:"total"`
	Saga       string     `json:"saga"`
	Shipment   *struct {
		ID             string    `json:"id"`
		TrackingNumber string    `json:"tracking_number"`
		ShippedAt      time.Time `json:"shipped_at"`
	} `json:"shipment,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// micro is t as the event store keeps times, so an order read from a
// snapshot equals the same order replayed from its events.
func micro(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

func encodeSnapshot(o *domain.Order) (eventstore.Snapshot, error) {
	d := snapshotData{CustomerID: o.CustomerID(), Status: string(o.Status()), Reason: o.Reason(), Saga: o.Saga(),
		Total: moneyData{o.Total().Amount, o.Total().Currency}, CreatedAt: micro(o.CreatedAt()), UpdatedAt: micro(o.UpdatedAt())}
	for _, l := range o.Lines() {
		d.Items = append(d.Items, lineData{l.ProductID, l.Name, l.Quantity, moneyData{l.UnitPrice.Amount, l.UnitPrice.Currency}})
	}
	if sh := o.Shipment(); sh.ID != "" {
		d.Shipment = &struct {
			ID             string    `json:"id"`
			TrackingNumber string    `json:"tracking_number"`
			ShippedAt      time.Time `json:"shipped_at"`
		}{sh.ID, sh.TrackingNumber, micro(sh.ShippedAt)}
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
	lines := make([]domain.Line, len(d.Items))
	for i, it := range d.Items {
		lines[i] = domain.Line{ProductID: it.ProductID, Name: it.Name, Quantity: it.Quantity,
			UnitPrice: domain.Money{Amount: it.UnitPrice.Amount, Currency: it.UnitPrice.Currency}}
	}
	var sh domain.Shipment
	if d.Shipment != nil {
		sh = domain.Shipment{ID: d.Shipment.ID, TrackingNumber: d.Shipment.TrackingNumber, ShippedAt: d.Shipment.ShippedAt}
	}
	return domain.Restore(s.Stream, d.CustomerID, domain.Status(d.Status), d.Reason, lines,
		domain.Money{Amount: d.Total.Amount, Currency: d.Total.Currency}, d.Saga, sh, s.Version, d.CreatedAt, d.UpdatedAt), true, nil
}

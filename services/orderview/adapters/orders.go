package adapters

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/services/orderview/domain"
)

// ProjectionOrders names the order read model.
const ProjectionOrders = "orderview"

// Orders is the order read model: one row per order, with the customer's
// name and the payment's status copied in from their own streams.
type Orders struct{}

// Name implements Projection.
func (Orders) Name() string { return ProjectionOrders }

// Streams implements Projection.
func (Orders) Streams() []string { return []string{StreamOrder, StreamPayment, StreamCustomer} }

// Apply implements Projection.
func (Orders) Apply(ctx context.Context, tx *sql.Tx, r bus.Record) error {
	ev, ok, err := decode(r)
	if err != nil || !ok {
		return err
	}
	switch e := ev.(type) {
	case domain.PaymentEvent:
		return applyPayment(ctx, tx, e)
	case domain.CustomerNamed:
		return applyCustomer(ctx, tx, e)
	case domain.OrderCreated:
		return applyOrder(ctx, tx, e.OrderID, e)
	case domain.OrderConfirmed:
		return applyOrder(ctx, tx, e.OrderID, e)
	case domain.OrderCancelled:
		return applyOrder(ctx, tx, e.OrderID, e)
	case domain.OrderShipped:
		return applyOrder(ctx, tx, e.OrderID, e)
	}
	return nil
}

// Reset implements Projection.
func (Orders) Reset(ctx context.Context, tx *sql.Tx) error {
	for _, table := range []string{"orders", "customer_names", "payment_statuses"} {
		if _, err := tx.ExecContext(ctx, "DELETE FROM "+table); err != nil {
			return fmt.Errorf("empty %s: %w", table, err)
		}
	}
	return nil
}

func applyOrder(ctx context.Context, tx *sql.Tx, id string, ev any) error {
	o, err := loadOrder(ctx, tx, id)
	if errors.Is(err, sql.ErrNoRows) {
		o, err = &domain.Order{ID: id}, nil
	}
	if err != nil {
		return err
	}
	if !o.Apply(ev) {
		return nil
	}
	// What arrived before the order's first row: its customer's name, its
	// payment.
	if o.CustomerName == "" && o.CustomerID != "" {
		err := tx.QueryRowContext(ctx, `SELECT name FROM customer_names WHERE customer_id = $1`, o.CustomerID).Scan(&o.CustomerName)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("name of customer %s: %w", o.CustomerID, err)
		}
	}
	if o.PaymentStatus == "" {
		err := tx.QueryRowContext(ctx, `SELECT status FROM payment_statuses WHERE order_id = $1`, o.ID).Scan(&o.PaymentStatus)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("payment of order %s: %w", o.ID, err)
		}
	}
	return saveOrder(ctx, tx, o)
}

func applyPayment(ctx context.Context, tx *sql.Tx, ev domain.PaymentEvent) error {
	var current string
	err := tx.QueryRowContext(ctx, `SELECT status FROM payment_statuses WHERE order_id = $1`, ev.OrderID).Scan(&current)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("payment of order %s: %w", ev.OrderID, err)
	}
	next := domain.NextPaymentStatus(current, ev)
	if next == current {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO payment_statuses (order_id, status) VALUES ($1, $2)
		ON CONFLICT (order_id) DO UPDATE SET status = excluded.status`, ev.OrderID, next); err != nil {
		return fmt.Errorf("payment of order %s: %w", ev.OrderID, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE orders SET payment_status = $1 WHERE id = $2`, next, ev.OrderID); err != nil {
		return fmt.Errorf("payment of order %s: %w", ev.OrderID, err)
	}
	return nil
}

func applyCustomer(ctx context.Context, tx *sql.Tx, ev domain.CustomerNamed) error {
	c := domain.Customer{ID: ev.CustomerID}
	var namedAt int64
	err := tx.QueryRowContext(ctx, `SELECT name, named_at FROM customer_names WHERE customer_id = $1`, ev.CustomerID).Scan(&c.Name, &namedAt)
	switch {
	case err == nil:
		c.NamedAt = fromMicros(namedAt)
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("name of customer %s: %w", ev.CustomerID, err)
	}
	if !c.Rename(ev) {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO customer_names (customer_id, name, named_at) VALUES ($1, $2, $3)
		ON CONFLICT (customer_id) DO UPDATE SET name = excluded.name, named_at = excluded.named_at`,
		c.ID, c.Name, micros(c.NamedAt)); err != nil {
		return fmt.Errorf("name of customer %s: %w", c.ID, err)
	}
	// Denormalized: every order row of the customer carries the name.
	if _, err := tx.ExecContext(ctx, `UPDATE orders SET customer_name = $1 WHERE customer_id = $2`, c.Name, c.ID); err != nil {
		return fmt.Errorf("name of customer %s: %w", c.ID, err)
	}
	return nil
}

// lineRow is an order line as the items column stores it.
type lineRow struct {
	ProductID string `json:"product_id"`
	Name      string `json:"name"`
	Quantity  int64  `json:"quantity"`
	Amount    int64  `json:"amount"`
	Currency  string `json:"currency"`
}

const orderColumns = `id, customer_id, customer_name, status, reason, items, total_amount, currency, saga,
	payment_status, shipment_id, tracking_number, shipped_at, created, created_at, updated_at, version`

type scanner interface{ Scan(dest ...any) error }

func scanOrder(row scanner) (*domain.Order, error) {
	var (
		o                               domain.Order
		items, shipmentID, tracking     string
		shippedAt, createdAt, updatedAt int64
		created                         int
	)
	if err := row.Scan(&o.ID, &o.CustomerID, &o.CustomerName, &o.Status, &o.Reason, &items, &o.Total.Amount, &o.Total.Currency,
		&o.Saga, &o.PaymentStatus, &shipmentID, &tracking, &shippedAt, &created, &createdAt, &updatedAt, &o.Version); err != nil {
		return nil, err
	}
	var lines []lineRow
	if err := json.Unmarshal([]byte(items), &lines); err != nil {
		return nil, fmt.Errorf("items of order %s: %w", o.ID, err)
	}
	o.Items = make([]domain.Line, len(lines))
	for i, l := range lines {
		o.Items[i] = domain.Line{ProductID: l.ProductID, Name: l.Name, Quantity: l.Quantity, UnitPrice: domain.Money{Amount: l.Amount, Currency: l.Currency}}
	}
	if shipmentID != "" {
		o.Shipment = &domain.Shipment{ID: shipmentID, TrackingNumber: tracking, ShippedAt: fromMicros(shippedAt)}
	}
	o.Created = created == 1
	o.CreatedAt, o.UpdatedAt = fromMicros(createdAt), fromMicros(updatedAt)
	return &o, nil
}

func loadOrder(ctx context.Context, tx *sql.Tx, id string) (*domain.Order, error) {
	o, err := scanOrder(tx.QueryRowContext(ctx, `SELECT `+orderColumns+` FROM orders WHERE id = $1`, id))
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("load order %s: %w", id, err)
	}
	return o, err
}

func saveOrder(ctx context.Context, tx *sql.Tx, o *domain.Order) error {
	lines := make([]lineRow, len(o.Items))
	for i, l := range o.Items {
		lines[i] = lineRow{l.ProductID, l.Name, l.Quantity, l.UnitPrice.Amount, l.UnitPrice.Currency}
	}
	items, err := json.Marshal(lines)
	if err != nil {
		return fmt.Errorf("items of order %s: %w", o.ID, err)
	}
	var s domain.Shipment
	var shippedAt int64
	if o.Shipment != nil {
		s, shippedAt = *o.Shipment, micros(o.Shipment.ShippedAt)
	}
	created := 0
	if o.Created {
		created = 1
	}
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO orders (`+orderColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
		ON CONFLICT (id) DO UPDATE SET
			customer_id = excluded.customer_id, customer_name = excluded.customer_name, status = excluded.status,
			reason = excluded.reason, items = excluded.items, total_amount = excluded.total_amount,
			currency = excluded.currency, saga = excluded.saga, payment_status = excluded.payment_status,
			shipment_id = excluded.shipment_id, tracking_number = excluded.tracking_number,
			shipped_at = excluded.shipped_at, created = excluded.created, created_at = excluded.created_at,
			updated_at = excluded.updated_at, version = excluded.version`,
		o.ID, o.CustomerID, o.CustomerName, o.Status, o.Reason, string(items), o.Total.Amount, o.Total.Currency, o.Saga,
		o.PaymentStatus, s.ID, s.TrackingNumber, shippedAt, created, micros(o.CreatedAt), micros(o.UpdatedAt), o.Version,
	); err != nil {
		return fmt.Errorf("save order %s: %w", o.ID, err)
	}
	return nil
}

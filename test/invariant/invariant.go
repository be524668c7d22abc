// Package invariant checks, after a run of the shop, the promises the
// design makes whatever happened during it (faults included):
//
//   - no order stays PENDING once the system is quiet;
//   - CONFIRMED (or SHIPPED): stock taken once and the payment captured once;
//   - CANCELLED: no net charge (declined, voided, or refunded) and no stock held;
//   - stock never negative, and what is available plus what orders hold is
//     what the catalog started with;
//   - no payment captured twice for one order;
//   - every service's outbox drained.
//
// DeadLetters lists what consumers gave up on, for a test to judge.
//
// It reads the services' databases directly. Services never do that to each
// other; a test that judges the whole system from outside may.
package invariant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/storage"
)

// Stock is the units per product id.
type Stock map[string]int64

// Snapshot reads the stock of every product: take one before a run.
func Snapshot(ctx context.Context, dataDir string) (Stock, error) {
	db, err := open(ctx, dataDir, "inventory")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	return stock(ctx, db)
}

// Report is what Check found.
type Report struct {
	Orders     map[string]int // by status
	Payments   map[string]int // by status
	Violations []string
}

func (r Report) String() string {
	return fmt.Sprintf("orders %v, payments %v, %d violations:\n  %s", r.Orders, r.Payments, len(r.Violations), strings.Join(r.Violations, "\n  "))
}

type order struct {
	id, status string
	saga       string // the saga's step and what it awaits, for the report
	lines      map[string]int64
}

// Check verifies every invariant against the databases under dataDir.
// initial is the Snapshot taken before the run.
func Check(ctx context.Context, dataDir string, initial Stock) (Report, error) {
	rep := Report{Orders: map[string]int{}, Payments: map[string]int{}}
	violate := func(format string, args ...any) {
		rep.Violations = append(rep.Violations, fmt.Sprintf(format, args...))
	}

	orders, err := readOrders(ctx, dataDir)
	if err != nil {
		return rep, err
	}
	payments, err := readPayments(ctx, dataDir)
	if err != nil {
		return rep, err
	}
	for _, status := range payments {
		rep.Payments[status]++
	}
	inv, err := open(ctx, dataDir, "inventory")
	if err != nil {
		return rep, err
	}
	defer inv.Close()
	held, err := reservations(ctx, inv)
	if err != nil {
		return rep, err
	}
	now, err := stock(ctx, inv)
	if err != nil {
		return rep, err
	}

	for _, svc := range []string{"customer", "inventory", "order", "payment"} {
		n, err := outboxPending(ctx, dataDir, svc)
		if err != nil {
			return rep, err
		}
		if n > 0 {
			violate("%s's outbox holds %d unpublished events", svc, n)
		}
	}

	heldTotal := Stock{}
	for _, o := range orders {
		rep.Orders[o.status]++
		pay := payments[o.id]
		res, holds := held[o.id]
		switch o.status {
		case "PENDING":
			violate("order %s is still PENDING (saga %s)", o.id, o.saga)
		case "CONFIRMED", "SHIPPED":
			if pay != "CAPTURED" {
				violate("%s order %s: payment %q, want CAPTURED", o.status, o.id, pay)
			}
			if !holds {
				violate("%s order %s holds no stock", o.status, o.id)
			} else if !sameLines(res, o.lines) {
				violate("%s order %s holds %v, ordered %v", o.status, o.id, res, o.lines)
			}
		case "CANCELLED":
			if pay == "CAPTURED" || pay == "PENDING" {
				violate("CANCELLED order %s: payment %s (a net charge)", o.id, pay)
			}
			if holds {
				violate("CANCELLED order %s still holds stock %v", o.id, res)
			}
		default:
			violate("order %s has unknown status %q", o.id, o.status)
		}
	}
	for orderID, res := range held {
		if _, ok := orders[orderID]; !ok {
			violate("stock held for unknown order %s", orderID)
		}
		for p, q := range res {
			heldTotal[p] += q
		}
	}
	for p, start := range initial {
		if now[p] < 0 {
			violate("product %s stock is negative: %d", p, now[p])
		}
		if now[p]+heldTotal[p] != start {
			violate("product %s: %d available + %d held, started with %d", p, now[p], heldTotal[p], start)
		}
	}
	sort.Strings(rep.Violations)
	return rep, nil
}

// Eventually checks until every invariant holds (the system settles after a
// fault) or the deadline passes, and fails t with the last report.
func Eventually(t testing.TB, dataDir string, initial Stock, within time.Duration) Report {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(within)
	for {
		rep, err := Check(ctx, dataDir, initial)
		if err != nil {
			t.Fatalf("check invariants: %v", err)
		}
		if len(rep.Violations) == 0 {
			return rep
		}
		if time.Now().After(deadline) {
			t.Fatalf("invariants broken after %v: %s", within, rep)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func outboxPending(ctx context.Context, dataDir, service string) (int, error) {
	db, err := open(ctx, dataDir, service)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM outbox`).Scan(&n); err != nil {
		return 0, fmt.Errorf("%s outbox: %w", service, err)
	}
	return n, nil
}

// DeadLetters returns the messages consumers gave up on, from the broker at
// url (stream DEADLETTER).
func DeadLetters(ctx context.Context, url string) ([]bus.DeadLetter, error) {
	b, err := bus.Connect(ctx, bus.Config{URL: url, Source: "invariant"})
	if err != nil {
		return nil, err
	}
	defer b.Close()
	return b.DeadLetters("DEADLETTER").List(ctx, 500, 0)
}

func open(ctx context.Context, dataDir, service string) (*storage.DB, error) {
	return storage.Open(ctx, storage.SQLiteDSN(dataDir, service))
}

// readOrders rebuilds every order's status and lines from the order
// service's event store (status from the event types, lines from
// order.created), with its saga's state for the report.
func readOrders(ctx context.Context, dataDir string) (map[string]*order, error) {
	db, err := open(ctx, dataDir, "order")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	out := map[string]*order{}
	rows, err := db.QueryContext(ctx, `SELECT e.stream, e.type, e.data, COALESCE(s.step || ' awaiting [' || s.awaiting || '] attempts ' || s.attempts, '')
		FROM events e LEFT JOIN sagas s ON s.order_id = e.stream ORDER BY e.position`)
	if err != nil {
		return nil, fmt.Errorf("read orders: %w", err)
	}
	defer rows.Close()
	status := map[string]string{
		"order.created": "PENDING", "order.confirmed": "CONFIRMED", "order.cancelled": "CANCELLED", "order.shipped": "SHIPPED",
	}
	for rows.Next() {
		var id, typ, data, saga string
		if err := rows.Scan(&id, &typ, &data, &saga); err != nil {
			return nil, err
		}
		o, ok := out[id]
		if !ok {
			o = &order{id: id, lines: map[string]int64{}}
			out[id] = o
		}
		o.status, o.saga = status[typ], saga
		if typ == "order.created" {
			var created struct {
				Saga  string `json:"saga"`
				Items []struct {
					ProductID string `json:"product_id"`
					Quantity  int64  `json:"quantity"`
				} `json:"items"`
			}
			if err := json.Unmarshal([]byte(data), &created); err != nil {
				return nil, fmt.Errorf("order %s: %w", id, err)
			}
			for _, it := range created.Items {
				o.lines[it.ProductID] += it.Quantity
			}
			o.saga = created.Saga + " " + saga
		}
	}
	return out, rows.Err()
}

// readPayments returns each order's payment status; the unique order id
// column already makes two payments for one order impossible.
func readPayments(ctx context.Context, dataDir string) (map[string]string, error) {
	db, err := open(ctx, dataDir, "payment")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, `SELECT order_id, status FROM payments`)
	if err != nil {
		return nil, fmt.Errorf("read payments: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, status string
		if err := rows.Scan(&id, &status); err != nil {
			return nil, err
		}
		out[id] = status
	}
	return out, rows.Err()
}

func reservations(ctx context.Context, db *storage.DB) (map[string]Stock, error) {
	rows, err := db.QueryContext(ctx,
		`SELECT r.order_id, l.product_id, l.quantity FROM reservations r JOIN reservation_lines l ON l.order_id = r.order_id WHERE r.status = 'HELD'`)
	if err != nil {
		return nil, fmt.Errorf("read reservations: %w", err)
	}
	defer rows.Close()
	out := map[string]Stock{}
	for rows.Next() {
		var id, product string
		var qty int64
		if err := rows.Scan(&id, &product, &qty); err != nil {
			return nil, err
		}
		if out[id] == nil {
			out[id] = Stock{}
		}
		out[id][product] += qty
	}
	return out, rows.Err()
}

func stock(ctx context.Context, db *storage.DB) (Stock, error) {
	rows, err := db.QueryContext(ctx, `SELECT id, available FROM products`)
	if err != nil {
		return nil, fmt.Errorf("read stock: %w", err)
	}
	defer rows.Close()
	out := Stock{}
	for rows.Next() {
		var id string
		var n int64
		if err := rows.Scan(&id, &n); err != nil {
			return nil, err
		}
		out[id] = n
	}
	if len(out) == 0 {
		return nil, errors.New("read stock: no products")
	}
	return out, rows.Err()
}

func sameLines(a, b Stock) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

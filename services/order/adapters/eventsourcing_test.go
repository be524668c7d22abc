package adapters_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	orderv1 "github.com/mercato-shop/mercato/api/gen/order/v1"
	paymentv1 "github.com/mercato-shop/mercato/api/gen/payment/v1"
	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/eventstore"
	"github.com/mercato-shop/mercato/platform/inbox"
	"github.com/mercato-shop/mercato/platform/outbox"
	"github.com/mercato-shop/mercato/platform/outbox/outboxtest"
	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/platform/storage/storagetest"
	"github.com/mercato-shop/mercato/services/order/adapters"
	"github.com/mercato-shop/mercato/services/order/app"
	"github.com/mercato-shop/mercato/services/order/domain"
	"github.com/mercato-shop/mercato/services/order/migrations"
)

// esEnv is a store over a database with the real saga handler on top. The
// outbox is not relayed, so what a change sends stays in its table.
type esEnv struct {
	db *storage.DB
	s  *adapters.Store
	ob *outbox.Outbox
	in *inbox.Inbox
	h  app.SagaHandler
}

func newES(t *testing.T, db *storage.DB, snapshotEvery int64) esEnv {
	t.Helper()
	ob := outboxtest.New(t, db, outboxtest.StartBus(t), "order", outbox.Config{})
	in := inbox.New(db, "")
	if err := in.EnsureSchema(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := newStoreWith(t, db, ob, in, snapshotEvery)
	return esEnv{db: db, s: s, ob: ob, in: in, h: app.NewSagaHandler(s, time.Minute, slog.New(slog.DiscardHandler))}
}

// place stores a new orchestrated order of c1 (2 x Mug at 14.50 EUR).
func (e esEnv) place(t *testing.T) *domain.Order {
	t.Helper()
	o, saga := newOrder(t, "c1")
	if existing, err := e.s.Create(context.Background(), o, saga, nil); err != nil || existing != "" {
		t.Fatalf("create: %q %v", existing, err)
	}
	return o
}

// reply delivers a participant's answer as the bus would: a new message.
func (e esEnv) reply(t *testing.T, id string, kind domain.ReplyKind) {
	t.Helper()
	if err := e.h.Reply(context.Background(), id, domain.Reply{Kind: kind},
		app.Claim{Consumer: "order-saga", MessageID: uuid.NewString()}); err != nil {
		t.Fatalf("reply %s to %s: %v", kind, id, err)
	}
}

func (e esEnv) cancel(t *testing.T, id string) {
	t.Helper()
	if _, err := e.h.Cancel(context.Background(), app.CancelOrder{OrderID: id, CustomerID: "c1"}); err != nil {
		t.Fatalf("cancel %s: %v", id, err)
	}
}

// confirm drives a fresh order's saga to a confirmed order.
func (e esEnv) confirm(t *testing.T, id string) {
	t.Helper()
	e.reply(t, id, domain.StockReserved)
	e.reply(t, id, domain.PaymentCompleted)
}

func (e esEnv) order(t *testing.T, id string) *domain.Order {
	t.Helper()
	o, err := e.s.Order(context.Background(), id)
	if err != nil {
		t.Fatalf("order %s: %v", id, err)
	}
	return o
}

func (e esEnv) events(t *testing.T, id string) []eventstore.Event {
	t.Helper()
	evs, err := e.s.Events(context.Background(), id)
	if err != nil {
		t.Fatalf("events of %s: %v", id, err)
	}
	return evs
}

// later lists the shipments due a given time after the handler's clock: the
// store ships a minute after confirmation, and a test does not wait.
type later struct {
	s  *adapters.Store
	by time.Duration
}

func (l later) DueShipments(ctx context.Context, now time.Time, limit int) ([]string, error) {
	return l.s.DueShipments(ctx, now.Add(l.by), limit)
}

func (e esEnv) shipDue(t *testing.T) int {
	t.Helper()
	n, err := e.h.ShipDue(context.Background(), later{e.s, 2 * time.Minute})
	if err != nil {
		t.Fatalf("ship due: %v", err)
	}
	return n
}

// outboxRow is a message written to the outbox, not yet published.
type outboxRow struct {
	id, subject string
	data        []byte
}

// outboxOf returns the outbox rows about order id (ce-subject), oldest first.
func outboxOf(t *testing.T, db *storage.DB, id string) []outboxRow {
	t.Helper()
	rows, err := db.QueryContext(context.Background(), `SELECT id, subject, header, data FROM outbox ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []outboxRow
	for rows.Next() {
		var r outboxRow
		var header string
		if err := rows.Scan(&r.id, &r.subject, &header, &r.data); err != nil {
			t.Fatal(err)
		}
		var h map[string][]string
		if err := json.Unmarshal([]byte(header), &h); err != nil {
			t.Fatalf("outbox header %q: %v", header, err)
		}
		if slices.Contains(h[bus.HeaderSubject], id) {
			out = append(out, r)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func subjects(rows []outboxRow) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.subject
	}
	return out
}

// published returns the order's own events in the outbox (order.*).
func published(rows []outboxRow) []outboxRow {
	var out []outboxRow
	for _, r := range rows {
		if strings.HasPrefix(r.subject, "order.") {
			out = append(out, r)
		}
	}
	return out
}

func count(ss []string, s string) int {
	n := 0
	for _, x := range ss {
		if x == s {
			n++
		}
	}
	return n
}

func eventTypes(evs []eventstore.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Type
	}
	return out
}

func eventIDs(evs []eventstore.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

// checkStream fails unless the stream holds versions 1..n in order.
func checkStream(t *testing.T, evs []eventstore.Event) {
	t.Helper()
	for i, e := range evs {
		if e.Version != int64(i+1) {
			t.Fatalf("event %d (%s) has version %d; stream %v", i, e.Type, e.Version, eventTypes(evs))
		}
	}
}

// publishedVersion decodes the order version an order.* message carries.
func publishedVersion(t *testing.T, r outboxRow) int64 {
	t.Helper()
	var m interface {
		proto.Message
		GetVersion() int64
	}
	switch r.subject {
	case domain.TypeCreated:
		m = &orderv1.OrderCreated{}
	case domain.TypeConfirmed:
		m = &orderv1.OrderConfirmed{}
	case domain.TypeCancelled:
		m = &orderv1.OrderCancelled{}
	case domain.TypeShipped:
		m = &orderv1.OrderShipped{}
	default:
		t.Fatalf("not an order event: %s", r.subject)
	}
	if err := proto.Unmarshal(r.data, m); err != nil {
		t.Fatalf("decode %s: %v", r.subject, err)
	}
	return m.GetVersion()
}

// checkPublishedAsStored fails unless the order's events in the outbox are
// exactly its stored events: same ids, types and versions, in order.
func checkPublishedAsStored(t *testing.T, db *storage.DB, id string, evs []eventstore.Event) {
	t.Helper()
	pub := published(outboxOf(t, db, id))
	if len(pub) != len(evs) {
		t.Fatalf("outbox holds %v, stream %v", subjects(pub), eventTypes(evs))
	}
	for i, r := range pub {
		if r.id != evs[i].ID || r.subject != evs[i].Type {
			t.Errorf("published %s %s, stored %s %s", r.subject, r.id, evs[i].Type, evs[i].ID)
		}
		if v := publishedVersion(t, r); v != evs[i].Version {
			t.Errorf("%s published with version %d, stored at %d", r.subject, v, evs[i].Version)
		}
	}
}

func jsonOf(t *testing.T, data []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("event data %s: %v", data, err)
	}
	return m
}

// money reads {"amount":..,"currency":..} from decoded JSON.
func moneyOf(v any) domain.Money {
	m, _ := v.(map[string]any)
	amount, _ := m["amount"].(float64)
	currency, _ := m["currency"].(string)
	return domain.Money{Amount: int64(amount), Currency: currency}
}

// diffOrders lists every accessor in which two orders differ; times are
// compared at the microsecond, the precision the store keeps.
func diffOrders(got, want *domain.Order, exactTimes bool) []string {
	var d []string
	same := func(a, b time.Time) bool {
		if exactTimes {
			return a.Equal(b)
		}
		return a.Truncate(time.Microsecond).Equal(b.Truncate(time.Microsecond))
	}
	check := func(name string, equal bool, g, w any) {
		if !equal {
			d = append(d, fmt.Sprintf("%s: got %v, want %v", name, g, w))
		}
	}
	check("ID", got.ID() == want.ID(), got.ID(), want.ID())
	check("CustomerID", got.CustomerID() == want.CustomerID(), got.CustomerID(), want.CustomerID())
	check("Status", got.Status() == want.Status(), got.Status(), want.Status())
	check("Reason", got.Reason() == want.Reason(), got.Reason(), want.Reason())
	check("Lines", slices.Equal(got.Lines(), want.Lines()), got.Lines(), want.Lines())
	check("Total", got.Total() == want.Total(), got.Total(), want.Total())
	check("Saga", got.Saga() == want.Saga(), got.Saga(), want.Saga())
	gs, ws := got.Shipment(), want.Shipment()
	check("Shipment", gs.ID == ws.ID && gs.TrackingNumber == ws.TrackingNumber && same(gs.ShippedAt, ws.ShippedAt), gs, ws)
	check("Version", got.Version() == want.Version(), got.Version(), want.Version())
	check("CreatedAt", same(got.CreatedAt(), want.CreatedAt()), got.CreatedAt(), want.CreatedAt())
	check("UpdatedAt", same(got.UpdatedAt(), want.UpdatedAt()), got.UpdatedAt(), want.UpdatedAt())
	return d
}

// fullReplay reads order id with its snapshot out of the way, so it is
// rebuilt from its events alone; the snapshot is put back after.
func fullReplay(t *testing.T, e esEnv, id string) *domain.Order {
	t.Helper()
	ctx := context.Background()
	var version, schema int64
	var data string
	var takenAt int64
	err := e.db.QueryRowContext(ctx, `SELECT version, schema_version, data, taken_at FROM events_snapshots WHERE stream = $1`, id).
		Scan(&version, &schema, &data, &takenAt)
	if errors.Is(err, sql.ErrNoRows) {
		return e.order(t, id)
	}
	if err != nil {
		t.Fatal(err)
	}
	exec(t, e.db, `DELETE FROM events_snapshots WHERE stream = $1`, id)
	o := e.order(t, id)
	exec(t, e.db, `INSERT INTO events_snapshots (stream, version, schema_version, data, taken_at) VALUES ($1, $2, $3, $4, $5)`,
		id, version, schema, data, takenAt)
	return o
}

func exec(t *testing.T, db *storage.DB, query string, args ...any) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

func snapshotVersion(t *testing.T, db *storage.DB, id string) (version int64, ok bool) {
	t.Helper()
	err := db.QueryRowContext(context.Background(), `SELECT version FROM events_snapshots WHERE stream = $1`, id).Scan(&version)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return version, true
}

// shipmentDue returns the due time of order id's shipment row, if any.
func shipmentDue(t *testing.T, db *storage.DB, id string) (due int64, ok bool) {
	t.Helper()
	err := db.QueryRowContext(context.Background(), `SELECT due_at FROM shipments WHERE order_id = $1`, id).Scan(&due)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return due, true
}

type sagaRow struct {
	step, awaiting, reason string
}

func sagaOf(t *testing.T, db *storage.DB, id string) sagaRow {
	t.Helper()
	var r sagaRow
	if err := db.QueryRowContext(context.Background(), `SELECT step, awaiting, cancel_reason FROM sagas WHERE order_id = $1`, id).
		Scan(&r.step, &r.awaiting, &r.reason); err != nil {
		t.Fatalf("saga of %s: %v", id, err)
	}
	return r
}

// A change appends the order's events to its stream, and the events the
// outbox publishes are those events: same ids, same versions.
func TestEventSourcing_ChangesAppendEventsAndPublishThem(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		e := newES(t, db, 0)
		o := e.place(t)
		evs := e.events(t, o.ID())
		if len(evs) != 1 || evs[0].Type != domain.TypeCreated || evs[0].Version != 1 || evs[0].Schema != 2 || evs[0].Stream != o.ID() {
			t.Fatalf("after create: %+v", evs)
		}
		if !evs[0].RecordedAt.Equal(o.CreatedAt().Truncate(time.Microsecond)) {
			t.Errorf("order.created recorded at %v, order created at %v", evs[0].RecordedAt, o.CreatedAt())
		}
		created := jsonOf(t, evs[0].Data)
		items, _ := created["items"].([]any)
		if created["customer_id"] != "c1" || created["saga"] != domain.Orchestrated || moneyOf(created["total"]) != (domain.Money{Amount: 2900, Currency: "EUR"}) || len(items) != 1 {
			t.Fatalf("order.created data %s", evs[0].Data)
		}
		item, _ := items[0].(map[string]any)
		if item["product_id"] != o.Lines()[0].ProductID || item["name"] != "Mug" || item["quantity"] != 2.0 ||
			moneyOf(item["unit_price"]) != (domain.Money{Amount: 1450, Currency: "EUR"}) {
			t.Fatalf("order.created line %v", item)
		}
		checkPublishedAsStored(t, db, o.ID(), evs)

		e.reply(t, o.ID(), domain.StockReserved) // the saga moves, the order does not
		if evs := e.events(t, o.ID()); len(evs) != 1 {
			t.Fatalf("a saga step without an order change appended %v", eventTypes(evs))
		}
		e.reply(t, o.ID(), domain.PaymentCompleted)
		e.cancel(t, o.ID()) // compensating: refund, release; still CONFIRMED
		if evs := e.events(t, o.ID()); !slices.Equal(eventTypes(evs), []string{domain.TypeCreated, domain.TypeConfirmed}) {
			t.Fatalf("while compensating: %v", eventTypes(evs))
		}
		e.reply(t, o.ID(), domain.PaymentRefunded)
		e.reply(t, o.ID(), domain.StockReleased)

		evs = e.events(t, o.ID())
		if !slices.Equal(eventTypes(evs), []string{domain.TypeCreated, domain.TypeConfirmed, domain.TypeCancelled}) {
			t.Fatalf("stream %v", eventTypes(evs))
		}
		checkStream(t, evs)
		if evs[1].Schema != 1 || evs[2].Schema != 1 || jsonOf(t, evs[2].Data)["reason"] != domain.ReasonCustomerCancelled {
			t.Errorf("confirmed %d %s, cancelled %d %s", evs[1].Schema, evs[1].Data, evs[2].Schema, evs[2].Data)
		}
		if ids := eventIDs(evs); len(slices.Compact(slices.Sorted(slices.Values(ids)))) != 3 {
			t.Errorf("event ids not unique: %v", ids)
		}
		checkPublishedAsStored(t, db, o.ID(), evs)
		// Each command once, in the order the saga sent them.
		var cmds []string
		for _, s := range subjects(outboxOf(t, db, o.ID())) {
			if !strings.HasPrefix(s, "order.") {
				cmds = append(cmds, s)
			}
		}
		if want := []string{"inventory.cmd.reserve", "payment.cmd.charge", "payment.cmd.refund", "inventory.cmd.release"}; !slices.Equal(cmds, want) {
			t.Errorf("commands %v, want %v", cmds, want)
		}
		got := e.order(t, o.ID())
		if got.Status() != domain.Cancelled || got.Reason() != domain.ReasonCustomerCancelled || got.Version() != 3 ||
			!got.UpdatedAt().Equal(evs[2].RecordedAt) || !got.CreatedAt().Equal(evs[0].RecordedAt) {
			t.Errorf("order %s %q v%d updated %v created %v", got.Status(), got.Reason(), got.Version(), got.UpdatedAt(), got.CreatedAt())
		}
		// Positions are global and rise with the stream.
		for i := 1; i < len(evs); i++ {
			if evs[i].Position <= evs[i-1].Position {
				t.Errorf("positions %d then %d", evs[i-1].Position, evs[i].Position)
			}
		}
		if evs, err := e.s.Events(context.Background(), uuid.NewString()); err != nil || len(evs) != 0 {
			t.Errorf("events of an unknown order: %v %v", evs, err)
		}
	})
}

// OrderAt answers the order as each version left it, whether a snapshot
// exists or not, and a version the order never had is not found.
func TestEventSourcing_TimeTravel(t *testing.T) {
	for _, every := range []int64{0, 2} {
		t.Run(fmt.Sprintf("snapshot every %d", every), func(t *testing.T) {
			storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
				ctx := context.Background()
				e := newES(t, db, every)
				o := e.place(t)
				e.confirm(t, o.ID())
				if n := e.shipDue(t); n != 1 {
					t.Fatalf("shipped %d orders", n)
				}
				evs := e.events(t, o.ID())
				if !slices.Equal(eventTypes(evs), []string{domain.TypeCreated, domain.TypeConfirmed, domain.TypeShipped}) {
					t.Fatalf("stream %v", eventTypes(evs))
				}
				v, snapped := snapshotVersion(t, db, o.ID())
				if every == 2 && (!snapped || v != 2) {
					t.Fatalf("snapshot %v at %d, want one at version 2", snapped, v)
				}
				if every == 0 && snapped {
					t.Fatal("a snapshot without snapshots configured")
				}
				now := e.order(t, o.ID())
				want := map[int64]struct {
					status   domain.Status
					shipment bool
				}{1: {domain.Pending, false}, 2: {domain.Confirmed, false}, 3: {domain.Shipped, true}}
				for version, w := range want {
					got, err := e.s.OrderAt(ctx, o.ID(), version)
					if err != nil {
						t.Fatalf("at %d: %v", version, err)
					}
					if got.Status() != w.status || got.Version() != version || (got.Shipment().ID != "") != w.shipment ||
						got.ID() != o.ID() || got.CustomerID() != "c1" || got.Total() != o.Total() || !slices.Equal(got.Lines(), o.Lines()) {
						t.Errorf("at %d: %s v%d shipment %+v", version, got.Status(), got.Version(), got.Shipment())
					}
					if !got.UpdatedAt().Truncate(time.Microsecond).Equal(evs[version-1].RecordedAt) ||
						!got.CreatedAt().Truncate(time.Microsecond).Equal(evs[0].RecordedAt) {
						t.Errorf("at %d: created %v updated %v; events at %v, %v", version, got.CreatedAt(), got.UpdatedAt(),
							evs[0].RecordedAt, evs[version-1].RecordedAt)
					}
				}
				if at3, _ := e.s.OrderAt(ctx, o.ID(), 3); at3 != nil {
					if d := diffOrders(at3, now, false); d != nil {
						t.Errorf("at the last version != now: %v", d)
					}
				}
				for _, version := range []int64{4, 99} {
					if got, err := e.s.OrderAt(ctx, o.ID(), version); !errors.Is(err, domain.ErrNotFound) {
						t.Errorf("at %d: %v, %v; want ErrNotFound", version, got, err)
					}
				}
				if _, err := e.s.OrderAt(ctx, uuid.NewString(), 1); !errors.Is(err, domain.ErrNotFound) {
					t.Errorf("an unknown order at 1: %v", err)
				}
			})
		})
	}
}

// With snapshots, a stream that crosses a multiple of SnapshotEvery leaves
// one; loads start from it and agree with a full replay; a snapshot in a
// schema the code does not know is ignored.
func TestEventSourcing_Snapshots(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e := newES(t, db, 2)
		o := e.place(t)
		e.reply(t, o.ID(), domain.StockReserved)
		if _, ok := snapshotVersion(t, db, o.ID()); ok {
			t.Fatal("a snapshot at version 1")
		}
		e.reply(t, o.ID(), domain.PaymentCompleted) // version 2
		var schema int
		var data string
		if err := db.QueryRowContext(ctx, `SELECT schema_version, data FROM events_snapshots WHERE stream = $1 AND version = 2`, o.ID()).
			Scan(&schema, &data); err != nil {
			t.Fatalf("no snapshot at version 2: %v", err)
		}
		snap := jsonOf(t, []byte(data))
		if schema != 1 || snap["status"] != string(domain.Confirmed) || snap["customer_id"] != "c1" || moneyOf(snap["total"]) != o.Total() {
			t.Fatalf("snapshot schema %d: %s", schema, data)
		}
		if d := diffOrders(e.order(t, o.ID()), fullReplay(t, e, o.ID()), false); d != nil {
			t.Errorf("load from the snapshot != full replay: %v", d)
		}

		// The load really starts from the snapshot: what it says wins over
		// the events it covers (and only for reads at or after it).
		snap["customer_id"] = "from-snapshot"
		doctored, _ := json.Marshal(snap)
		exec(t, db, `UPDATE events_snapshots SET data = $1 WHERE stream = $2`, string(doctored), o.ID())
		if got := e.order(t, o.ID()); got.CustomerID() != "from-snapshot" || got.Status() != domain.Confirmed || got.Version() != 2 {
			t.Errorf("load ignores the snapshot: %s %s v%d", got.CustomerID(), got.Status(), got.Version())
		}
		if got, err := e.s.OrderAt(ctx, o.ID(), 1); err != nil || got.CustomerID() != "c1" || got.Status() != domain.Pending {
			t.Errorf("at 1, below the snapshot: %v %v", got, err)
		}
		exec(t, db, `UPDATE events_snapshots SET data = $1 WHERE stream = $2`, data, o.ID())

		// Version 3 adds to the snapshot at 2 (no new one: 3 crosses nothing).
		if n := e.shipDue(t); n != 1 {
			t.Fatalf("shipped %d", n)
		}
		if v, _ := snapshotVersion(t, db, o.ID()); v != 2 {
			t.Errorf("snapshot at %d after version 3, want 2", v)
		}
		got := e.order(t, o.ID())
		if got.Status() != domain.Shipped || got.Version() != 3 {
			t.Fatalf("snapshot + event 3: %s v%d", got.Status(), got.Version())
		}
		if d := diffOrders(got, fullReplay(t, e, o.ID()), false); d != nil {
			t.Errorf("snapshot + event 3 != full replay: %v", d)
		}

		// A snapshot of an unknown schema is ignored, whatever it holds.
		other := e.place(t)
		exec(t, db, `INSERT INTO events_snapshots (stream, version, schema_version, data, taken_at) VALUES ($1, 1, 99, $2, 0)`,
			other.ID(), `{"format":"from the future"`)
		if got := e.order(t, other.ID()); got.Status() != domain.Pending || got.Version() != 1 || got.CustomerID() != "c1" {
			t.Errorf("with an unknown snapshot: %s v%d", got.Status(), got.Version())
		}
		if d := diffOrders(e.order(t, other.ID()), fullReplay(t, e, other.ID()), false); d != nil {
			t.Errorf("with an unknown snapshot != full replay: %v", d)
		}
		exec(t, db, `UPDATE events_snapshots SET schema_version = 99, version = 2 WHERE stream = $1`, o.ID())
		if got := e.order(t, o.ID()); got.Status() != domain.Shipped || got.Version() != 3 || got.Shipment().ID == "" {
			t.Errorf("with a snapshot of schema 99: %s v%d", got.Status(), got.Version())
		}
		// Commands still work on it, and the next snapshot replaces it.
		e.confirm(t, other.ID())
		if err := db.QueryRowContext(ctx, `SELECT schema_version FROM events_snapshots WHERE stream = $1 AND version = 2`, other.ID()).Scan(&schema); err != nil || schema != 1 {
			t.Errorf("snapshot after version 2: schema %d, %v", schema, err)
		}
		if got := e.order(t, other.ID()); got.Status() != domain.Confirmed || got.Version() != 2 {
			t.Errorf("confirmed over an unknown snapshot: %s v%d", got.Status(), got.Version())
		}
	})
}

// A snapshot is the state replay gives, to the last digit: reading an order
// must not answer differently once a snapshot of it exists.
func TestEventSourcing_SnapshotHoldsWhatReplayGives(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e := newES(t, db, 2)
		o := e.place(t)
		// A clock with nanoseconds, as time.Now has on Linux.
		now := time.Now().UTC().Truncate(time.Second).Add(123456789)
		for _, kind := range []domain.ReplyKind{domain.StockReserved, domain.PaymentCompleted} {
			if err := e.s.Update(ctx, o.ID(), nil, func(o *domain.Order, saga *domain.Saga) ([]domain.Command, error) {
				cmds, _, err := saga.Handle(o, domain.Reply{Kind: kind}, now, time.Minute)
				return cmds, err
			}); err != nil {
				t.Fatal(err)
			}
		}
		if v, ok := snapshotVersion(t, db, o.ID()); !ok || v != 2 {
			t.Fatalf("snapshot %v at %d", ok, v)
		}
		fromSnapshot, replayed := e.order(t, o.ID()), fullReplay(t, e, o.ID())
		if d := diffOrders(fromSnapshot, replayed, true); d != nil {
			t.Errorf("the same order reads differently with and without its snapshot: %v", d)
		}
	})
}

// A snapshot is a cache of what the events say: one that cannot be decoded
// must not make the order unreadable.
func TestEventSourcing_CorruptSnapshotIsIgnored(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		e := newES(t, db, 2)
		o := e.place(t)
		e.confirm(t, o.ID())
		exec(t, db, `UPDATE events_snapshots SET data = $1 WHERE stream = $2`, `{"status":`, o.ID())
		got, err := e.s.Order(context.Background(), o.ID())
		if err != nil {
			t.Fatalf("an order with a corrupt snapshot: %v", err)
		}
		if got.Status() != domain.Confirmed || got.Version() != 2 {
			t.Errorf("%s v%d", got.Status(), got.Version())
		}
	})
}

// The golden record of the first writer of the event store: order.created
// at schema 1, amounts without a currency (the shop sold in euros). It is
// never rewritten; it must read as euros for as long as the store exists.
const (
	goldenOrderID   = "0190f5a2-6b1d-7c3e-8f4a-1b2c3d4e5f60"
	goldenEventID   = "0190f5a2-6b1d-7c3e-8f4a-1b2c3d4e5f61"
	goldenProductID = "0190f5a2-7c4e-7b3a-9d2e-5f1a2b3c4d5e"
	goldenCreatedV1 = `{"customer_id":"c1","items":[{"product_id":"0190f5a2-7c4e-7b3a-9d2e-5f1a2b3c4d5e","name":"Mug","quantity":2,"unit_amount":1450}],"total_amount":2900,"saga":"orchestrated"}`
)

func TestEventSourcing_OrderCreatedSchema1ReadsAsEuros(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e := newES(t, db, 2)
		recorded := time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)
		exec(t, db, `INSERT INTO events (id, stream, version, type, schema_version, data, recorded_at) VALUES ($1, $2, 1, 'order.created', 1, $3, $4)`,
			goldenEventID, goldenOrderID, goldenCreatedV1, recorded.UnixMicro())
		exec(t, db, `INSERT INTO sagas (order_id, step, awaiting, cancel_reason, payment_token, attempts, deadline, updated_at)
			VALUES ($1, 'RESERVING', '', '', 'tok_ok', 0, $2, $3)`,
			goldenOrderID, time.Now().Add(time.Hour).UnixMicro(), recorded.UnixMicro())

		o := e.order(t, goldenOrderID)
		wantLine := domain.Line{ProductID: goldenProductID, Name: "Mug", Quantity: 2, UnitPrice: domain.Money{Amount: 1450, Currency: "EUR"}}
		if o.Total() != (domain.Money{Amount: 2900, Currency: "EUR"}) || !slices.Equal(o.Lines(), []domain.Line{wantLine}) ||
			o.Status() != domain.Pending || o.Version() != 1 || o.CustomerID() != "c1" || o.Saga() != domain.Orchestrated ||
			!o.CreatedAt().Equal(recorded) || !o.UpdatedAt().Equal(recorded) {
			t.Fatalf("schema 1 order reads as total %v lines %v %s v%d %s %s created %v",
				o.Total(), o.Lines(), o.Status(), o.Version(), o.CustomerID(), o.Saga(), o.CreatedAt())
		}
		evs := e.events(t, goldenOrderID)
		if len(evs) != 1 || evs[0].Schema != 2 || evs[0].ID != goldenEventID || evs[0].Type != domain.TypeCreated {
			t.Fatalf("events %+v", evs)
		}
		d := jsonOf(t, evs[0].Data)
		items, _ := d["items"].([]any)
		if moneyOf(d["total"]) != (domain.Money{Amount: 2900, Currency: "EUR"}) || len(items) != 1 || d["customer_id"] != "c1" || d["saga"] != domain.Orchestrated {
			t.Fatalf("upcast data %s", evs[0].Data)
		}
		if item, _ := items[0].(map[string]any); moneyOf(item["unit_price"]) != (domain.Money{Amount: 1450, Currency: "EUR"}) ||
			item["product_id"] != goldenProductID || item["quantity"] != 2.0 || item["name"] != "Mug" {
			t.Fatalf("upcast line %v", item)
		}
		// Read upcasts; the stored record stays as written.
		var schema int
		var raw string
		if err := db.QueryRowContext(ctx, `SELECT schema_version, data FROM events WHERE id = $1`, goldenEventID).Scan(&schema, &raw); err != nil ||
			schema != 1 || raw != goldenCreatedV1 {
			t.Errorf("stored record now schema %d %s (%v)", schema, raw, err)
		}

		// The saga charges what the old record says, in euros.
		e.reply(t, goldenOrderID, domain.StockReserved)
		var charge *paymentv1.ChargePayment
		for _, r := range outboxOf(t, db, goldenOrderID) {
			if r.subject == "payment.cmd.charge" {
				charge = &paymentv1.ChargePayment{}
				if err := proto.Unmarshal(r.data, charge); err != nil {
					t.Fatal(err)
				}
			}
		}
		if charge == nil || charge.GetAmount().GetAmount() != 2900 || charge.GetAmount().GetCurrency() != "EUR" || charge.GetCustomerId() != "c1" {
			t.Fatalf("charge %v", charge)
		}
		e.reply(t, goldenOrderID, domain.PaymentCompleted)
		evs = e.events(t, goldenOrderID)
		checkStream(t, evs)
		if !slices.Equal(eventTypes(evs), []string{domain.TypeCreated, domain.TypeConfirmed}) {
			t.Fatalf("stream %v", eventTypes(evs))
		}
		// Loaded from the snapshot at 2 now, still in euros.
		if v, ok := snapshotVersion(t, db, goldenOrderID); !ok || v != 2 {
			t.Fatalf("snapshot %v at %d", ok, v)
		}
		if o := e.order(t, goldenOrderID); o.Status() != domain.Confirmed || o.Total() != (domain.Money{Amount: 2900, Currency: "EUR"}) ||
			!slices.Equal(o.Lines(), []domain.Line{wantLine}) {
			t.Errorf("from the snapshot: %s %v %v", o.Status(), o.Total(), o.Lines())
		}
		if o, err := e.s.OrderAt(ctx, goldenOrderID, 1); err != nil || o.Total() != (domain.Money{Amount: 2900, Currency: "EUR"}) {
			t.Errorf("at 1: %v %v", o, err)
		}
	})
}

// The customer's cancel and the payment's success arrive together while the
// saga charges. Whichever commits first, the other re-reads and runs again:
// neither fails, and the result is one of the two serial outcomes.
//   - payment first: CONFIRMED (v2), then the cancel compensates it: refund
//     and release pending, order still CONFIRMED until both answer.
//   - cancel first: compensating from CHARGING with refund and release
//     pending; the late payment changes nothing (the refund undoes it);
//     order PENDING (v1).
//
// Either way the saga ends COMPENSATING, awaiting refund and release, and
// the order is cancelled once they answer.
func TestEventSourcing_CancelRacesPaymentCompleted(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e := newES(t, db, 2)
		outcomes := map[string]int{}
		for i := range 50 {
			o := e.place(t)
			e.reply(t, o.ID(), domain.StockReserved)
			if s := sagaOf(t, db, o.ID()); s.step != string(domain.Charging) {
				t.Fatalf("saga at %s, want CHARGING", s.step)
			}
			start := make(chan struct{})
			var cancelErr, replyErr error
			var wg sync.WaitGroup
			wg.Go(func() {
				<-start
				_, cancelErr = e.h.Cancel(ctx, app.CancelOrder{OrderID: o.ID(), CustomerID: "c1"})
			})
			wg.Go(func() {
				<-start
				replyErr = e.h.Reply(ctx, o.ID(), domain.Reply{Kind: domain.PaymentCompleted},
					app.Claim{Consumer: "order-saga", MessageID: uuid.NewString()})
			})
			close(start)
			wg.Wait()
			if cancelErr != nil || replyErr != nil {
				t.Fatalf("order %d: cancel %v, reply %v", i, cancelErr, replyErr)
			}

			evs := e.events(t, o.ID())
			checkStream(t, evs)
			got := e.order(t, o.ID())
			_, shipment := shipmentDue(t, db, o.ID())
			var paymentFirst bool
			switch types := eventTypes(evs); {
			case slices.Equal(types, []string{domain.TypeCreated}):
				if got.Status() != domain.Pending || got.Version() != 1 || shipment {
					t.Fatalf("order %d, cancel first: %s v%d shipment %v", i, got.Status(), got.Version(), shipment)
				}
			case slices.Equal(types, []string{domain.TypeCreated, domain.TypeConfirmed}):
				paymentFirst = true
				if got.Status() != domain.Confirmed || got.Version() != 2 || !shipment {
					t.Fatalf("order %d, payment first: %s v%d shipment %v", i, got.Status(), got.Version(), shipment)
				}
			default:
				t.Fatalf("order %d: stream %v is no legal outcome", i, types)
			}
			if s := sagaOf(t, db, o.ID()); s != (sagaRow{string(domain.Compensating), "refund,release", domain.ReasonCustomerCancelled}) {
				t.Fatalf("order %d (payment first %v): saga %+v", i, paymentFirst, s)
			}
			subs := subjects(outboxOf(t, db, o.ID()))
			for _, c := range []struct {
				subject string
				n       int
			}{
				{"inventory.cmd.reserve", 1}, {"payment.cmd.charge", 1}, {"payment.cmd.refund", 1}, {"inventory.cmd.release", 1},
				{domain.TypeCreated, 1}, {domain.TypeConfirmed, map[bool]int{true: 1}[paymentFirst]}, {domain.TypeCancelled, 0},
			} {
				if n := count(subs, c.subject); n != c.n {
					t.Fatalf("order %d (payment first %v): outbox %v holds %s %d times, want %d", i, paymentFirst, subs, c.subject, n, c.n)
				}
			}
			checkPublishedAsStored(t, db, o.ID(), evs)

			// The compensation completes to a cancelled order either way.
			e.reply(t, o.ID(), domain.PaymentRefunded)
			e.reply(t, o.ID(), domain.StockReleased)
			evs = e.events(t, o.ID())
			checkStream(t, evs)
			if types := eventTypes(evs); types[len(types)-1] != domain.TypeCancelled || count(types, domain.TypeCancelled) != 1 {
				t.Fatalf("order %d: stream %v after compensation", i, types)
			}
			got = e.order(t, o.ID())
			if got.Status() != domain.Cancelled || got.Reason() != domain.ReasonCustomerCancelled || got.Version() != int64(len(evs)) {
				t.Fatalf("order %d: %s %q v%d", i, got.Status(), got.Reason(), got.Version())
			}
			if _, ok := shipmentDue(t, db, o.ID()); ok {
				t.Fatalf("order %d: a cancelled order keeps its shipment", i)
			}
			if s := sagaOf(t, db, o.ID()); s.step != string(domain.Done) {
				t.Fatalf("order %d: saga %+v", i, s)
			}
			checkPublishedAsStored(t, db, o.ID(), evs)
			outcomes[map[bool]string{true: "payment first", false: "cancel first"}[paymentFirst]]++
		}
		t.Logf("outcomes: %v", outcomes)
	})
}

var trackingNumber = regexp.MustCompile(`^MRC[0-9A-F]{12}$`)

// A confirmed order gets a durable shipping timer; when it is due the saga
// handler ships the order once; a cancelled order never ships.
func TestEventSourcing_Shipping(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e := newES(t, db, 0)
		o := e.place(t)
		if _, ok := shipmentDue(t, db, o.ID()); ok {
			t.Fatal("a pending order has a shipment")
		}
		e.confirm(t, o.ID())
		due, ok := shipmentDue(t, db, o.ID())
		if !ok {
			t.Fatal("a confirmed order has no shipment")
		}
		confirmed := e.events(t, o.ID())[1]
		if want := confirmed.RecordedAt.Add(time.Minute).UnixMicro(); due != want {
			t.Errorf("due at %d, want a minute after the confirmation (%d)", due, want)
		}
		dueAt := time.UnixMicro(due)
		for _, c := range []struct {
			now  time.Time
			want []string
		}{
			{confirmed.RecordedAt, nil},
			{dueAt.Add(-time.Microsecond), nil},
			{dueAt, []string{o.ID()}},
			{dueAt.Add(time.Hour), []string{o.ID()}},
		} {
			if ids, err := e.s.DueShipments(ctx, c.now, 10); err != nil || !slices.Equal(ids, c.want) {
				t.Errorf("due by %v: %v %v, want %v", c.now, ids, err, c.want)
			}
		}
		if n, err := e.h.ShipDue(ctx, e.s); err != nil || n != 0 {
			t.Errorf("ship before due: %d %v", n, err)
		}
		if got := e.order(t, o.ID()); got.Status() != domain.Confirmed {
			t.Fatalf("shipped early: %s", got.Status())
		}

		if n := e.shipDue(t); n != 1 {
			t.Fatalf("shipped %d, want 1", n)
		}
		got := e.order(t, o.ID())
		sh := got.Shipment()
		if got.Status() != domain.Shipped || got.Version() != 3 || uuid.Validate(sh.ID) != nil || !trackingNumber.MatchString(sh.TrackingNumber) {
			t.Fatalf("after shipping: %s v%d %+v", got.Status(), got.Version(), sh)
		}
		evs := e.events(t, o.ID())
		checkStream(t, evs)
		if len(evs) != 3 || evs[2].Type != domain.TypeShipped {
			t.Fatalf("stream %v", eventTypes(evs))
		}
		if d := jsonOf(t, evs[2].Data); d["shipment_id"] != sh.ID || d["tracking_number"] != sh.TrackingNumber {
			t.Errorf("order.shipped data %s, shipment %+v", evs[2].Data, sh)
		}
		if !sh.ShippedAt.Equal(evs[2].RecordedAt) || !got.UpdatedAt().Equal(evs[2].RecordedAt) {
			t.Errorf("shipped at %v, updated %v, event at %v", sh.ShippedAt, got.UpdatedAt(), evs[2].RecordedAt)
		}
		checkPublishedAsStored(t, db, o.ID(), evs)
		for _, r := range outboxOf(t, db, o.ID()) {
			if r.subject == domain.TypeShipped {
				var m orderv1.OrderShipped
				if err := proto.Unmarshal(r.data, &m); err != nil {
					t.Fatal(err)
				}
				if m.GetOrderId() != o.ID() || m.GetCustomerId() != "c1" || m.GetShipmentId() != sh.ID || m.GetTrackingNumber() != sh.TrackingNumber {
					t.Errorf("published order.shipped %v, shipment %+v", &m, sh)
				}
			}
		}
		if _, ok := shipmentDue(t, db, o.ID()); ok {
			t.Error("a shipped order keeps its shipment")
		}
		before := pending(t, e.ob)
		if n := e.shipDue(t); n != 0 {
			t.Errorf("shipped again: %d", n)
		}
		if len(e.events(t, o.ID())) != 3 || pending(t, e.ob) != before {
			t.Error("a second ShipDue wrote something")
		}

		// Cancelled while CONFIRMED: the shipment waits for the
		// compensation, then goes; the order never ships.
		c := e.place(t)
		e.confirm(t, c.ID())
		e.cancel(t, c.ID())
		if n := e.shipDue(t); n != 0 {
			t.Errorf("shipped an order being cancelled: %d", n)
		}
		if got := e.order(t, c.ID()); got.Status() != domain.Confirmed {
			t.Fatalf("while compensating: %s", got.Status())
		}
		e.reply(t, c.ID(), domain.PaymentRefunded)
		e.reply(t, c.ID(), domain.StockReleased)
		if _, ok := shipmentDue(t, db, c.ID()); ok {
			t.Error("a cancelled order keeps its shipment")
		}
		if n := e.shipDue(t); n != 0 {
			t.Errorf("shipped a cancelled order: %d", n)
		}
		if ids, _ := e.s.DueShipments(ctx, time.Now().Add(time.Hour), 10); len(ids) != 0 {
			t.Errorf("due after all: %v", ids)
		}
		if got := e.order(t, c.ID()); got.Status() != domain.Cancelled || got.Shipment().ID != "" {
			t.Errorf("cancelled order: %s %+v", got.Status(), got.Shipment())
		}
		if types := eventTypes(e.events(t, c.ID())); !slices.Equal(types, []string{domain.TypeCreated, domain.TypeConfirmed, domain.TypeCancelled}) {
			t.Errorf("cancelled order's stream %v", types)
		}
		if subs := subjects(outboxOf(t, db, c.ID())); count(subs, domain.TypeShipped) != 0 {
			t.Errorf("outbox of the cancelled order %v", subs)
		}
	})
}

// legacyOrder is a row of the orders table as versions before event
// sourcing wrote it (migrations 00001, 00002), with its lines and saga.
type legacyOrder struct {
	id, status, reason, currency, step string
	lines                              []domain.Line
	version                            int64
	created, updated                   time.Time
}

func (l legacyOrder) total() int64 {
	var t int64
	for _, ln := range l.lines {
		t += ln.UnitPrice.Amount * ln.Quantity
	}
	return t
}

func insertLegacy(t *testing.T, db *storage.DB, l legacyOrder) {
	t.Helper()
	exec(t, db, `INSERT INTO orders (id, customer_id, status, reason, total_amount, currency, saga, version, created_at, updated_at)
		VALUES ($1, 'c1', $2, $3, $4, $5, 'orchestrated', $6, $7, $8)`,
		l.id, l.status, l.reason, l.total(), l.currency, l.version, l.created.UnixMicro(), l.updated.UnixMicro())
	for _, ln := range l.lines {
		exec(t, db, `INSERT INTO order_lines (order_id, product_id, name, quantity, unit_amount) VALUES ($1, $2, $3, $4, $5)`,
			l.id, ln.ProductID, ln.Name, ln.Quantity, ln.UnitPrice.Amount)
	}
	exec(t, db, `INSERT INTO sagas (order_id, step, awaiting, cancel_reason, payment_token, attempts, deadline, updated_at)
		VALUES ($1, $2, '', $3, 'tok_ok', 0, 0, $4)`, l.id, l.step, l.reason, l.updated.UnixMicro())
}

func legacyOrders(currency string) []legacyOrder {
	base := time.Date(2024, 11, 5, 10, 0, 0, 123000, time.UTC)
	var out []legacyOrder
	// The old store bumped version and updated_at with each status change
	// only: a PENDING row was last updated when it was created.
	for i, s := range []struct {
		status, reason, step string
		version              int64
	}{
		{"PENDING", "", "RESERVING", 1},
		{"CONFIRMED", "", "DONE", 2},
		{"CANCELLED", domain.ReasonPaymentDeclined, "DONE", 2},
		{"SHIPPED", "", "DONE", 3},
	} {
		a, b := uuid.Must(uuid.NewV7()).String(), uuid.Must(uuid.NewV7()).String()
		created := base.Add(time.Duration(i) * time.Hour)
		updated := created.Add(time.Duration(s.version-1) * time.Minute)
		out = append(out, legacyOrder{
			id: uuid.Must(uuid.NewV7()).String(), status: s.status, reason: s.reason, currency: currency, step: s.step,
			// Sorted by product id, as the store reads them.
			lines: []domain.Line{
				{ProductID: a, Name: "Mug", Quantity: 2, UnitPrice: domain.Money{Amount: 1450, Currency: currency}},
				{ProductID: b, Name: "Tee", Quantity: 1, UnitPrice: domain.Money{Amount: 2400, Currency: currency}},
			},
			created: created, updated: updated, version: s.version,
		})
	}
	return out
}

// Orders kept as rows by earlier versions become event streams once, with
// the same status, lines and total, and their sagas carry on.
func TestEventSourcing_ImportLegacy(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e := newES(t, db, 0)
		fresh := e.place(t) // stored by this version: not in the legacy tables
		legacy := legacyOrders("USD")
		for _, l := range legacy {
			insertLegacy(t, db, l)
		}
		n, err := e.s.ImportLegacy(ctx)
		if err != nil || n != len(legacy) {
			t.Fatalf("import: %d %v, want %d", n, err, len(legacy))
		}
		wantTypes := map[string][]string{
			"PENDING":   {domain.TypeCreated},
			"CONFIRMED": {domain.TypeCreated, domain.TypeConfirmed},
			"CANCELLED": {domain.TypeCreated, domain.TypeCancelled},
			"SHIPPED":   {domain.TypeCreated, domain.TypeConfirmed, domain.TypeShipped},
		}
		streams := map[string][]string{}
		for _, l := range legacy {
			o := e.order(t, l.id)
			if string(o.Status()) != l.status || o.Reason() != l.reason || !slices.Equal(o.Lines(), l.lines) ||
				o.Total() != (domain.Money{Amount: l.total(), Currency: "USD"}) || o.CustomerID() != "c1" || o.Saga() != domain.Orchestrated ||
				!o.CreatedAt().Equal(l.created) || !o.UpdatedAt().Equal(l.updated) {
				t.Errorf("%s imported as %s %q %v %v %s created %v updated %v", l.status, o.Status(), o.Reason(), o.Lines(), o.Total(),
					o.CustomerID(), o.CreatedAt(), o.UpdatedAt())
			}
			evs := e.events(t, l.id)
			checkStream(t, evs)
			streams[l.id] = eventIDs(evs)
			if types := eventTypes(evs); !slices.Equal(types, wantTypes[l.status]) {
				t.Errorf("%s imported as %v", l.status, types)
			}
			if o.Version() != int64(len(evs)) {
				t.Errorf("%s at version %d with %d events", l.status, o.Version(), len(evs))
			}
			if evs[0].Schema != 2 || moneyOf(jsonOf(t, evs[0].Data)["total"]) != o.Total() {
				t.Errorf("%s created as schema %d %s", l.status, evs[0].Schema, evs[0].Data)
			}
			if _, ok := shipmentDue(t, db, l.id); ok != (l.status == "CONFIRMED") {
				t.Errorf("%s has a shipment: %v", l.status, ok)
			}
		}
		if types := eventTypes(e.events(t, fresh.ID())); !slices.Equal(types, []string{domain.TypeCreated}) {
			t.Errorf("an order of this version after the import: %v", types)
		}

		if n, err := e.s.ImportLegacy(ctx); err != nil || n != 0 {
			t.Fatalf("second import: %d %v", n, err)
		}
		for _, l := range legacy {
			if ids := eventIDs(e.events(t, l.id)); !slices.Equal(ids, streams[l.id]) {
				t.Errorf("%s: second import changed the stream: %v -> %v", l.status, streams[l.id], ids)
			}
		}

		// The sagas carry on over the imported streams.
		pendingOne, confirmedOne := legacy[0], legacy[1]
		e.reply(t, pendingOne.id, domain.StockReserved)
		e.reply(t, pendingOne.id, domain.PaymentCompleted)
		if o := e.order(t, pendingOne.id); o.Status() != domain.Confirmed || o.Version() != 2 {
			t.Errorf("legacy pending order after payment: %s v%d", o.Status(), o.Version())
		}
		if n := e.shipDue(t); n != 2 { // the legacy confirmed one and the one just confirmed
			t.Errorf("shipped %d, want 2", n)
		}
		if o := e.order(t, confirmedOne.id); o.Status() != domain.Shipped || o.Version() != 3 {
			t.Errorf("legacy confirmed order after ShipDue: %s v%d", o.Status(), o.Version())
		}
		checkStream(t, e.events(t, confirmedOne.id))
	})
}

// Replicas start together and each imports the legacy orders: every order
// is imported once and no replica fails to start.
func TestEventSourcing_ImportLegacyOnReplicasStartingTogether(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e := newES(t, db, 0)
		other := newStoreWith(t, db, e.ob, e.in, 0)
		var legacy []legacyOrder
		for range 25 {
			for _, l := range legacyOrders("EUR") {
				insertLegacy(t, db, l)
				legacy = append(legacy, l)
			}
		}
		var n1, n2 int
		var err1, err2 error
		start := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() { <-start; n1, err1 = e.s.ImportLegacy(ctx) })
		wg.Go(func() { <-start; n2, err2 = other.ImportLegacy(ctx) })
		close(start)
		wg.Wait()
		if err1 != nil || err2 != nil {
			t.Fatalf("imports: %v; %v", err1, err2)
		}
		if n1+n2 != len(legacy) {
			t.Errorf("imported %d + %d, want %d in all", n1, n2, len(legacy))
		}
		for _, l := range legacy {
			evs := e.events(t, l.id)
			checkStream(t, evs)
			if string(e.order(t, l.id).Status()) != l.status {
				t.Fatalf("%s imported as %s", l.id, e.order(t, l.id).Status())
			}
		}
	})
}

// The customer cancels a confirmed order just as it is due to ship. Either
// it ships first, and the cancel is refused (a shipped order cannot be
// cancelled), or the cancel starts compensating first, and the order waits
// and never ships. Never both: shipped goods refunded and released.
func TestEventSourcing_CancelRacesShipping(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e := newES(t, db, 0)
		outcomes := map[string]int{}
		for i := range 30 {
			o := e.place(t)
			e.confirm(t, o.ID())
			start := make(chan struct{})
			var cancelErr, shipErr error
			var shipped int
			var wg sync.WaitGroup
			wg.Go(func() {
				<-start
				_, cancelErr = e.h.Cancel(ctx, app.CancelOrder{OrderID: o.ID(), CustomerID: "c1"})
			})
			wg.Go(func() {
				<-start
				shipped, shipErr = e.h.ShipDue(ctx, later{e.s, 2 * time.Minute})
			})
			close(start)
			wg.Wait()
			if shipErr != nil {
				t.Fatalf("order %d: ship: %v", i, shipErr)
			}
			got, saga := e.order(t, o.ID()), sagaOf(t, db, o.ID())
			subs := subjects(outboxOf(t, db, o.ID()))
			switch {
			case shipped == 1:
				outcomes["shipped first"]++
				if !errors.Is(cancelErr, domain.ErrInvalidTransition) || got.Status() != domain.Shipped ||
					saga.step != string(domain.Done) || count(subs, "payment.cmd.refund") != 0 || count(subs, "inventory.cmd.release") != 0 {
					t.Fatalf("order %d shipped, and then: cancel %v, order %s, saga %+v, outbox %v", i, cancelErr, got.Status(), saga, subs)
				}
			case shipped == 0:
				outcomes["cancel first"]++
				_, scheduled := shipmentDue(t, db, o.ID())
				if cancelErr != nil || got.Status() != domain.Confirmed || saga.step != string(domain.Compensating) || !scheduled ||
					count(subs, domain.TypeShipped) != 0 || count(subs, "payment.cmd.refund") != 1 {
					t.Fatalf("order %d not shipped: cancel %v, order %s, saga %+v, shipment %v, outbox %v", i, cancelErr, got.Status(), saga, scheduled, subs)
				}
			default:
				t.Fatalf("order %d: shipped %d orders", i, shipped)
			}
			checkStream(t, e.events(t, o.ID()))
			// Leave no order due for the next round.
			if got.Status() == domain.Confirmed {
				e.reply(t, o.ID(), domain.PaymentRefunded)
				e.reply(t, o.ID(), domain.StockReleased)
			}
		}
		t.Logf("outcomes: %v", outcomes)
	})
}

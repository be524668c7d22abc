package orderview_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/platform/storage/storagetest"
	"github.com/mercato-shop/mercato/platform/web"
	"github.com/mercato-shop/mercato/services/orderview"
	ovt "github.com/mercato-shop/mercato/services/orderview/orderviewtest"
)

// waitFor bounds every wait for the projections.
const waitFor = 30 * time.Second

var t0 = time.Date(2030, 5, 6, 7, 40, 0, 0, time.UTC)

// shop is a broker holding the streams orderview reads, with a publisher
// standing in for the contexts that own them.
type shop struct {
	t   *testing.T
	url string
	pub *bus.Bus
}

func newShop(t *testing.T) *shop {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	srv, err := bus.StartServer(ctx, bus.ServerConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	pub, err := bus.Connect(ctx, bus.Config{URL: srv.ClientURL(), Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	for _, s := range ovt.Streams() {
		if err := pub.EnsureStream(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	return &shop{t: t, url: srv.ClientURL(), pub: pub}
}

func (s *shop) publish(events ...bus.Event) {
	s.t.Helper()
	for _, e := range events {
		if err := s.pub.Publish(s.t.Context(), e); err != nil {
			s.t.Fatalf("publish %s: %v", e.Type, err)
		}
	}
}

// instance is a running orderview.
type instance struct {
	t    *testing.T
	svc  *orderview.Service
	dsn  string
	stop func()
}

// start starts orderview on dsn; it is stopped at cleanup unless before.
func (s *shop) start(dsn string) *instance {
	s.t.Helper()
	svc := orderview.New(orderview.Config{DSN: dsn, BusURL: s.url}, slog.New(slog.DiscardHandler), nil)
	ctx, cancel := context.WithTimeout(s.t.Context(), waitFor)
	defer cancel()
	if err := svc.Start(ctx); err != nil {
		s.t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			if err := svc.Stop(context.Background()); err != nil {
				s.t.Errorf("stop: %v", err)
			}
		})
	}
	s.t.Cleanup(stop)
	return &instance{t: s.t, svc: svc, dsn: dsn, stop: stop}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// do calls the service as the gateway would, for the caller subject with
// roles (no subject: anonymous).
func (in *instance) do(method, path, subject string, roles ...string) response {
	in.t.Helper()
	req, err := http.NewRequestWithContext(in.t.Context(), method, "http://"+in.svc.Addr()+path, nil)
	if err != nil {
		in.t.Fatal(err)
	}
	if subject != "" {
		req.Header.Set(web.SubjectHeader, subject)
		req.Header.Set(web.RolesHeader, strings.Join(roles, ","))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		in.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		in.t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

func decode[T any](t *testing.T, r response) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
	return v
}

type orderJSON struct {
	ID            string `json:"id"`
	CustomerID    string `json:"customer_id"`
	CustomerName  string `json:"customer_name"`
	Status        string `json:"status"`
	Reason        string `json:"reason"`
	PaymentStatus string `json:"payment_status"`
	Version       int64  `json:"version"`
	Items         []struct {
		ProductID string `json:"product_id"`
		Name      string `json:"name"`
		Quantity  int64  `json:"quantity"`
		UnitPrice struct {
			Amount   int64  `json:"amount"`
			Currency string `json:"currency"`
		} `json:"unit_price"`
	} `json:"items"`
	Total struct {
		Amount   int64  `json:"amount"`
		Currency string `json:"currency"`
	} `json:"total"`
	Saga     string `json:"saga"`
	Shipment *struct {
		ShipmentID     string    `json:"shipment_id"`
		TrackingNumber string    `json:"tracking_number"`
		ShippedAt      time.Time `json:"shipped_at"`
	} `json:"shipment"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

type pageJSON struct {
	Orders     []orderJSON `json:"orders"`
	NextCursor string      `json:"next_cursor"`
}

type projectionJSON struct {
	Name       string `json:"name"`
	State      string `json:"state"`
	Generation int64  `json:"generation"`
	Streams    []struct {
		Stream       string `json:"stream"`
		Checkpoint   uint64 `json:"checkpoint"`
		LastSequence uint64 `json:"last_sequence"`
		Lag          uint64 `json:"lag"`
	} `json:"streams"`
}

// page lists a page of the customer's orders.
func (in *instance) page(customer, query string) pageJSON {
	in.t.Helper()
	r := in.do("GET", "/api/orders"+query, customer, "customer")
	if r.status != http.StatusOK {
		in.t.Fatalf("list: %d %s", r.status, r.body)
	}
	return decode[pageJSON](in.t, r)
}

// caughtUp waits until every projection has applied everything the
// streams hold, at generation at least gen, and returns where they stand.
func (in *instance) caughtUp(gen int64) map[string]projectionJSON {
	in.t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		r := in.do("GET", "/admin/projections", "admin-1", "admin")
		if r.status != http.StatusOK {
			in.t.Fatalf("projections: %d %s", r.status, r.body)
		}
		out := map[string]projectionJSON{}
		live := true
		for _, p := range decode[struct{ Projections []projectionJSON }](in.t, r).Projections {
			out[p.Name] = p
			live = live && p.State == "live" && p.Generation >= gen
		}
		if live && len(out) == 2 {
			return out
		}
		if time.Now().After(deadline) {
			in.t.Fatalf("projections not caught up: %s", r.body)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rows dumps every table of both read models, in a stable order, as text:
// what "the same rows" means.
func rows(t *testing.T, dsn string) map[string][]string {
	t.Helper()
	db, err := storage.Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out := map[string][]string{}
	for table, key := range map[string]string{
		"orders": "id", "customer_names": "customer_id", "payment_statuses": "order_id", "order_facts": "order_id",
	} {
		rs, err := db.QueryContext(t.Context(), "SELECT * FROM "+table+" ORDER BY "+key)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rs.Columns()
		for rs.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rs.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			row := make([]string, len(cols))
			for i, v := range vals {
				if b, ok := v.([]byte); ok {
					v = string(b)
				}
				row[i] = fmt.Sprintf("%s=%v", cols[i], v)
			}
			out[table] = append(out[table], strings.Join(row, " "))
		}
		if err := rs.Err(); err != nil {
			t.Fatal(err)
		}
		rs.Close()
	}
	return out
}

func newID() string { return uuid.Must(uuid.NewV7()).String() }

// The list shows the caller's orders only, newest first, with the names,
// payment statuses and shipments other streams said, in pages.
func TestService_ListsTheCallersOrdersFromTheStreams(t *testing.T) {
	s := newShop(t)
	in := s.start(storage.SQLiteDSN(t.TempDir(), "orderview"))
	ann, bob := newID(), newID()
	var annOrders []string
	for i := range 5 {
		id := newID()
		annOrders = append([]string{id}, annOrders...)
		s.publish(ovt.Created(id, ann, 1, t0.Add(time.Duration(i)*time.Minute)))
	}
	newest, oldest := annOrders[0], annOrders[4]
	bobs := newID()
	s.publish(
		ovt.Created(bobs, bob, 1, t0), ovt.Registered(bob, "Bob", t0),
		ovt.Paid(newest, 2500), ovt.Confirmed(newest, ann, 3, t0.Add(time.Hour)), ovt.Shipped(newest, ann, 4, t0.Add(2*time.Hour)),
		ovt.Declined(oldest, 2500), ovt.Cancelled(oldest, ann, "payment_declined", 3, t0.Add(time.Hour)),
		// Ann's name comes after her orders.
		ovt.Registered(ann, "Ann", t0),
	)
	in.caughtUp(1)

	all := in.page(ann, "")
	var ids []string
	for _, o := range all.Orders {
		ids = append(ids, o.ID)
		if o.CustomerID != ann || o.CustomerName != "Ann" || o.Total.Amount != 2500 || o.Saga != "orchestrated" ||
			len(o.Items) != 1 || o.Items[0].Name != "Mug" || o.Items[0].UnitPrice.Amount != 1250 {
			t.Fatalf("ann's order %+v", o)
		}
	}
	if !reflect.DeepEqual(ids, annOrders) || all.NextCursor != "" {
		t.Fatalf("ann's list %v (next %q), want newest first %v", ids, all.NextCursor, annOrders)
	}
	first := all.Orders[0]
	if first.Status != "SHIPPED" || first.PaymentStatus != "CAPTURED" || first.Version != 4 || first.Shipment == nil ||
		first.Shipment.ShipmentID != "ship-"+newest[:8] || first.Shipment.TrackingNumber != "TRK-"+newest[:8] ||
		!first.Shipment.ShippedAt.Equal(t0.Add(2*time.Hour)) || !first.UpdatedAt.Equal(t0.Add(2*time.Hour)) ||
		!first.CreatedAt.Equal(t0.Add(4*time.Minute)) {
		t.Fatalf("shipped order %+v", first)
	}
	last := all.Orders[4]
	if last.Status != "CANCELLED" || last.Reason != "payment_declined" || last.PaymentStatus != "DECLINED" || last.Shipment != nil {
		t.Fatalf("declined order %+v", last)
	}
	if got := in.page(bob, ""); len(got.Orders) != 1 || got.Orders[0].ID != bobs || got.Orders[0].CustomerName != "Bob" {
		t.Fatalf("bob's list %+v", got)
	}

	// Pages of two: 2, 2, 1, the same orders in the same order.
	var paged []string
	var sizes []int
	for q := "?limit=2"; ; {
		p := in.page(ann, q)
		sizes = append(sizes, len(p.Orders))
		for _, o := range p.Orders {
			paged = append(paged, o.ID)
		}
		if p.NextCursor == "" {
			break
		}
		q = "?limit=2&cursor=" + p.NextCursor
	}
	if fmt.Sprint(sizes) != "[2 2 1]" || !reflect.DeepEqual(paged, annOrders) {
		t.Fatalf("pages %v: %v, want %v", sizes, paged, annOrders)
	}

	for _, q := range []string{"?limit=0", "?limit=101", "?limit=ten", "?limit=-1", "?cursor=nope", "?cursor=" + strings.Repeat("A", 40)} {
		r := in.do("GET", "/api/orders"+q, ann, "customer")
		if r.status != http.StatusBadRequest || r.header.Get("Content-Type") != web.ProblemContentType {
			t.Fatalf("%s: %d %s %s, want a 400 problem", q, r.status, r.header.Get("Content-Type"), r.body)
		}
	}
	if r := in.do("GET", "/api/orders", ""); r.status != http.StatusUnauthorized {
		t.Fatalf("anonymous: %d", r.status)
	}
	for _, path := range []string{"/admin/stats", "/admin/projections"} {
		if r := in.do("GET", path, ann, "customer"); r.status != http.StatusForbidden {
			t.Fatalf("a customer reads %s: %d", path, r.status)
		}
	}
	if r := in.do("POST", "/admin/projections/orderview/rebuild", ann, "customer"); r.status != http.StatusForbidden {
		t.Fatalf("a customer rebuilds: %d", r.status)
	}
	if r := in.do("POST", "/admin/projections/nothing/rebuild", "admin-1", "admin"); r.status != http.StatusNotFound {
		t.Fatalf("rebuild of an unknown projection: %d", r.status)
	}
}

// A restarted service goes on from its checkpoints: what came meanwhile is
// applied, and nothing before is applied again (a row changed behind its
// back stays changed, which a replay from the start would undo).
func TestService_ResumesFromItsCheckpointsAfterARestart(t *testing.T) {
	for _, e := range storagetest.Engines(t) {
		t.Run(e.Name, func(t *testing.T) {
			s := newShop(t)
			in := s.start(e.DSN)
			ann, o1, o2 := newID(), newID(), newID()
			s.publish(ovt.Registered(ann, "Ann", t0), ovt.Created(o1, ann, 1, t0), ovt.Confirmed(o1, ann, 3, t0.Add(time.Second)))
			in.caughtUp(1)
			in.stop()

			// Behind the projection's back: a replay of order.confirmed
			// would set the status again.
			db, err := storage.Open(t.Context(), e.DSN)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.ExecContext(t.Context(), `UPDATE orders SET status = 'CHANGED', version = 1 WHERE id = $1`, o1); err != nil {
				t.Fatal(err)
			}
			db.Close()
			s.publish(ovt.Created(o2, ann, 1, t0.Add(time.Minute)), ovt.Confirmed(o2, ann, 3, t0.Add(2*time.Minute)))

			in = s.start(e.DSN)
			st := in.caughtUp(1)["orderview"]
			list := in.page(ann, "").Orders
			if len(list) != 2 || list[0].ID != o2 || list[0].Status != "CONFIRMED" || list[0].CustomerName != "Ann" {
				t.Fatalf("after the restart: %+v", list)
			}
			if list[1].Status != "CHANGED" {
				t.Fatalf("the restart replayed applied events: the status is %q again", list[1].Status)
			}
			for _, ss := range st.Streams {
				if ss.Checkpoint != ss.LastSequence {
					t.Fatalf("stream %s: checkpoint %d, last sequence %d", ss.Stream, ss.Checkpoint, ss.LastSequence)
				}
			}
		})
	}
}

// events is a history with everything the projections must get right:
// late names, payments before orders, out-of-order and repeated events,
// shipments, and orders of both saga modes.
func events(n int) []bus.Event {
	var out []bus.Event
	for i := range n {
		c, o := newID(), newID()
		at := t0.Add(time.Duration(i) * time.Minute)
		switch i % 4 {
		case 0:
			out = append(out, ovt.Created(o, c, 1, at), ovt.Paid(o, 2500), ovt.Confirmed(o, c, 3, at.Add(time.Second)),
				ovt.Registered(c, fmt.Sprint("Customer ", i), at))
		case 1:
			out = append(out, ovt.Registered(c, fmt.Sprint("Customer ", i), at), ovt.Paid(o, 2500),
				ovt.Confirmed(o, c, 3, at.Add(2*time.Second)), ovt.Created(o, c, 1, at), ovt.Shipped(o, c, 4, at.Add(time.Hour)),
				ovt.Confirmed(o, c, 3, at.Add(2*time.Second)))
		case 2:
			ev := ovt.Created(o, c, 1, at)
			out = append(out, ev, ovt.Declined(o, 2500), ovt.Cancelled(o, c, "payment_declined", 4, at.Add(3*time.Second)),
				ovt.Refunded(o, 0), ev, ovt.Registered(c, fmt.Sprint("Customer ", i), at), ovt.Updated(c, "Renamed", at.Add(time.Hour)))
		case 3:
			out = append(out, ovt.Created(o, c, 1, at), ovt.Paid(o, 2500), ovt.Confirmed(o, c, 3, at.Add(time.Second)),
				ovt.Refunded(o, 2500), ovt.Cancelled(o, c, "customer_cancelled", 6, at.Add(time.Hour)))
		}
	}
	return out
}

// A rebuild drops both read models and replays the streams from the start,
// ending on exactly the rows it dropped.
func TestService_RebuildConvergesOnTheSameRows(t *testing.T) {
	for _, e := range storagetest.Engines(t) {
		t.Run(e.Name, func(t *testing.T) {
			s := newShop(t)
			in := s.start(e.DSN)
			s.publish(events(12)...)
			in.caughtUp(1)
			before := rows(t, e.DSN)
			if len(before["orders"]) != 12 || len(before["order_facts"]) != 12 {
				t.Fatalf("before the rebuild: %d orders, %d facts", len(before["orders"]), len(before["order_facts"]))
			}
			stats := in.do("GET", "/admin/stats", "admin-1", "admin")

			for _, p := range []string{"orderview", "analytics"} {
				r := in.do("POST", "/admin/projections/"+p+"/rebuild", "admin-1", "admin")
				st := decode[projectionJSON](t, r)
				if r.status != http.StatusAccepted || r.header.Get("Location") != "/admin/projections/"+p || st.Generation != 2 {
					t.Fatalf("rebuild %s: %d %s", p, r.status, r.body)
				}
			}
			in.caughtUp(2)
			if after := rows(t, e.DSN); !reflect.DeepEqual(after, before) {
				t.Fatalf("rows after the rebuild differ:\n got %v\nwant %v", after, before)
			}
			if again := in.do("GET", "/admin/stats", "admin-1", "admin"); string(again.body) != string(stats.body) {
				t.Fatalf("stats after the rebuild:\n%s\nwant\n%s", again.body, stats.body)
			}
		})
	}
}

// A read model dropped while events flow: the rebuild replays what was
// there and what keeps coming, and ends on the rows of an instance that
// never rebuilt.
func TestService_RebuildWhileEventsFlowCatchesUpAndConverges(t *testing.T) {
	for _, e := range storagetest.Engines(t) {
		t.Run(e.Name, func(t *testing.T) {
			s := newShop(t)
			in := s.start(e.DSN)
			history := events(40)
			quarter := len(history) / 4
			s.publish(history[:quarter]...)

			// Events go on before, during and after the rebuilds.
			halfway, rebuilt, flowing := make(chan struct{}), make(chan struct{}), make(chan error, 1)
			go func() {
				for i, ev := range history[quarter:] {
					if i == quarter {
						close(halfway)
						<-rebuilt
					}
					if err := s.pub.Publish(context.Background(), ev); err != nil {
						flowing <- err
						return
					}
				}
				flowing <- nil
			}()
			select {
			case <-halfway:
			case err := <-flowing:
				t.Fatal(err)
			}
			for range 2 {
				for _, p := range []string{"orderview", "analytics"} {
					if r := in.do("POST", "/admin/projections/"+p+"/rebuild", "admin-1", "admin"); r.status != http.StatusAccepted {
						t.Fatalf("rebuild: %d %s", r.status, r.body)
					}
				}
			}
			close(rebuilt)
			if err := <-flowing; err != nil {
				t.Fatal(err)
			}
			in.caughtUp(3)

			fresh := s.start(storage.SQLiteDSN(t.TempDir(), "fresh"))
			fresh.caughtUp(1)
			got, want := rows(t, e.DSN), rows(t, fresh.dsn)
			if len(want["orders"]) != 40 || !reflect.DeepEqual(got, want) {
				t.Fatalf("after rebuilds under flow (%d orders):\n got %v\nwant %v", len(want["orders"]), got, want)
			}
		})
	}
}

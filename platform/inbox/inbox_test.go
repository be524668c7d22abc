package inbox_test

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/mercato-shop/mercato/platform/bus"
	"github.com/mercato-shop/mercato/platform/bus/bustest"
	"github.com/mercato-shop/mercato/platform/inbox"
	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/platform/storage/storagetest"
)

const waitFor = 20 * time.Second

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

// newInbox returns an inbox with its table created, and an "effects" table
// that test handlers write to.
func newInbox(t *testing.T, db *storage.DB) *inbox.Inbox {
	t.Helper()
	in := inbox.New(db, "")
	if err := in.EnsureSchema(testContext(t)); err != nil {
		t.Fatalf("ensure schema: %v", err)
	}
	if err := in.EnsureSchema(testContext(t)); err != nil {
		t.Fatalf("ensure schema again: %v", err)
	}
	if _, err := db.ExecContext(testContext(t), `CREATE TABLE effects (message_id TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	return in
}

// claim claims id for consumer in a transaction of its own.
func claim(t *testing.T, db *storage.DB, in *inbox.Inbox, consumer, id string) bool {
	t.Helper()
	var first bool
	err := db.InTx(testContext(t), func(tx *sql.Tx) error {
		var err error
		first, err = in.Claim(testContext(t), tx, consumer, id)
		return err
	})
	if err != nil {
		t.Fatalf("claim %s: %v", id, err)
	}
	return first
}

func effects(t *testing.T, db *storage.DB, id string) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(testContext(t), `SELECT COUNT(*) FROM effects WHERE message_id = $1`, id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestClaim_IsFirstOncePerConsumer(t *testing.T) {
	storagetest.Each(t, nil, func(t *testing.T, db *storage.DB) {
		in := newInbox(t, db)
		id := uuid.NewString()
		if !claim(t, db, in, "a", id) {
			t.Error("first claim is not first")
		}
		if claim(t, db, in, "a", id) {
			t.Error("second claim by the same consumer is first")
		}
		if !claim(t, db, in, "b", id) {
			t.Error("another consumer's first claim is not first")
		}
	})
}

func TestClaim_RolledBackClaimIsNotKept(t *testing.T) {
	storagetest.Each(t, nil, func(t *testing.T, db *storage.DB) {
		in := newInbox(t, db)
		id := uuid.NewString()
		boom := errors.New("effect failed")
		err := db.InTx(testContext(t), func(tx *sql.Tx) error {
			if first, err := in.Claim(testContext(t), tx, "a", id); err != nil || !first {
				t.Errorf("claim = %v, %v; want first", first, err)
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("InTx = %v", err)
		}
		if !claim(t, db, in, "a", id) {
			t.Error("claim after a rollback is not first")
		}
	})
}

func TestClaim_ConcurrentClaimsOfOneIDHaveOneFirst(t *testing.T) {
	storagetest.Each(t, nil, func(t *testing.T, db *storage.DB) {
		in := newInbox(t, db)
		id := uuid.NewString()
		const claimers = 8
		var firsts atomic.Int32
		var wg sync.WaitGroup
		ready := make(chan struct{})
		for range claimers {
			wg.Go(func() {
				<-ready
				err := db.InTx(testContext(t), func(tx *sql.Tx) error {
					first, err := in.Claim(testContext(t), tx, "a", id)
					if first {
						firsts.Add(1)
					}
					return err
				})
				if err != nil {
					t.Errorf("claim: %v", err)
				}
			})
		}
		close(ready)
		wg.Wait()
		if n := firsts.Load(); n != 1 {
			t.Errorf("%d first claims, want 1", n)
		}
	})
}

// afterNow returns once the clock has moved past now by a microsecond, the
// precision of handled_at.
func afterNow() time.Time {
	now := time.Now().UnixMicro()
	for time.Now().UnixMicro() <= now {
	}
	return time.Now()
}

func TestPrune_ForgetsOnlyOlderRecords(t *testing.T) {
	storagetest.Each(t, nil, func(t *testing.T, db *storage.DB) {
		in := newInbox(t, db)
		old, recent := uuid.NewString(), uuid.NewString()
		claim(t, db, in, "a", old)
		cutoff := afterNow()
		afterNow()
		claim(t, db, in, "a", recent)

		n, err := in.Prune(testContext(t), cutoff)
		if err != nil || n != 1 {
			t.Fatalf("prune = %d, %v; want 1 record", n, err)
		}
		if !claim(t, db, in, "a", old) {
			t.Error("a pruned record still counts")
		}
		if claim(t, db, in, "a", recent) {
			t.Error("a recent record was pruned")
		}
	})
}

func TestHandle_AppliesEachMessageOnce(t *testing.T) {
	storagetest.Each(t, nil, func(t *testing.T, db *storage.DB) {
		ctx := testContext(t)
		in := newInbox(t, db)
		var calls atomic.Int32
		fail := errors.New("effect failed")
		h := in.Handle("a", func(ctx context.Context, tx *sql.Tx, m bus.Message, data []byte) error {
			if _, err := tx.ExecContext(ctx, `INSERT INTO effects (message_id) VALUES ($1)`, m.ID); err != nil {
				return err
			}
			if calls.Add(1) == 1 {
				return fail // rolls back the effect and the claim
			}
			return nil
		})
		m := bus.Message{ID: uuid.NewString(), Type: "thing.happened"}
		if err := h(ctx, m, nil); !errors.Is(err, fail) {
			t.Fatalf("first delivery = %v, want the handler's error", err)
		}
		for i := range 2 {
			if err := h(ctx, m, nil); err != nil {
				t.Fatalf("delivery %d: %v", i+2, err)
			}
		}
		if n := effects(t, db, m.ID); n != 1 || calls.Load() != 2 {
			t.Errorf("effects = %d after %d calls, want 1 after 2 (failed, applied)", n, calls.Load())
		}
		if err := h(ctx, bus.Message{Type: "thing.happened"}, nil); !errors.Is(err, bus.ErrPoison) {
			t.Errorf("message without id = %v, want ErrPoison", err)
		}
	})
}

func TestOn_DecodesThePayloadOnce(t *testing.T) {
	storagetest.Each(t, nil, func(t *testing.T, db *storage.DB) {
		ctx := testContext(t)
		in := newInbox(t, db)
		var got []string
		h := inbox.On(in, "a", func(ctx context.Context, tx *sql.Tx, m bus.Message, ev *wrapperspb.StringValue) error {
			got = append(got, ev.GetValue())
			_, err := tx.ExecContext(ctx, `INSERT INTO effects (message_id) VALUES ($1)`, m.ID)
			return err
		})
		data, err := proto.Marshal(wrapperspb.String("hello"))
		if err != nil {
			t.Fatal(err)
		}
		m := bus.Message{ID: uuid.NewString(), Type: "thing.happened"}
		for range 2 {
			if err := h(ctx, m, data); err != nil {
				t.Fatal(err)
			}
		}
		if len(got) != 1 || got[0] != "hello" {
			t.Errorf("handled %q, want hello once", got)
		}
		if err := h(ctx, bus.Message{ID: uuid.NewString(), Type: "thing.happened"}, []byte{0xff}); !errors.Is(err, bus.ErrPoison) {
			t.Errorf("undecodable payload = %v, want ErrPoison", err)
		}
	})
}

// A consumer that commits its effect and fails before acking (a crash, a
// lost ack) gets the message again: the redelivery must change nothing.
func TestHandle_RedeliveryAfterCommitIsANoOp(t *testing.T) {
	bustest.Each(t, func(t *testing.T, target bustest.Target) {
		storagetest.Each(t, nil, func(t *testing.T, db *storage.DB) {
			ctx := testContext(t)
			in := newInbox(t, db)
			b, err := bus.Connect(ctx, bus.Config{URL: target.URL, Source: "inboxtest"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(b.Close)
			stream, typ := bustest.Unique("INBOX"), bustest.Unique("t")+".thing.happened"
			if err := b.EnsureStream(ctx, bus.Stream{Name: stream, Subjects: []string{typ}}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := b.JetStream().DeleteStream(context.Background(), stream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
					t.Errorf("delete stream: %v", err)
				}
			})

			var applied atomic.Int32
			handle := in.Handle("a", func(ctx context.Context, tx *sql.Tx, m bus.Message, _ []byte) error {
				applied.Add(1)
				_, err := tx.ExecContext(ctx, `INSERT INTO effects (message_id) VALUES ($1)`, m.ID)
				return err
			})
			deliveries := make(chan uint64, 10)
			sub, err := b.Subscribe(ctx, bus.Consumer{Stream: stream, Durable: "a", Backoff: []time.Duration{10 * time.Millisecond}},
				bus.Handlers{typ: func(ctx context.Context, m bus.Message, data []byte) error {
					err := handle(ctx, m, data)
					deliveries <- m.Delivered
					if err == nil && m.Delivered == 1 {
						return errors.New("lost ack") // after the commit
					}
					return err
				}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(sub.Stop)

			id := uuid.NewString()
			if err := b.Publish(ctx, bus.Event{ID: id, Type: typ, Data: wrapperspb.String("x")}); err != nil {
				t.Fatal(err)
			}
			for want := uint64(1); want <= 2; want++ {
				select {
				case got := <-deliveries:
					if got != want {
						t.Fatalf("delivery %d, want %d", got, want)
					}
				case <-ctx.Done():
					t.Fatalf("delivery %d never came", want)
				}
			}
			if n := effects(t, db, id); n != 1 || applied.Load() != 1 {
				t.Errorf("effect applied %d times (%d rows), want once", applied.Load(), n)
			}
		})
	})
}

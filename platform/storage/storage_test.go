package storage_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/platform/storage/storagetest"
)

// migrations is a tiny schema in the portable SQL the project writes.
var migrations = fstest.MapFS{
	"00001_items.sql": {Data: []byte(`-- +goose Up
CREATE TABLE items (
    id  TEXT PRIMARY KEY,
    sku TEXT NOT NULL UNIQUE,
    qty BIGINT NOT NULL
);

-- +goose Down
DROP TABLE items;
`)},
	"00002_counters.sql": {Data: []byte(`-- +goose Up
CREATE TABLE counters (
    id INTEGER PRIMARY KEY,
    n  BIGINT NOT NULL
);
INSERT INTO counters (id, n) VALUES (1, 0);

-- +goose Down
DROP TABLE counters;
`)},
}

func insertItem(ctx context.Context, q interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, id, sku string, qty int64) error {
	_, err := q.ExecContext(ctx, `INSERT INTO items (id, sku, qty) VALUES ($1, $2, $3)`, id, sku, qty)
	return err
}

func countItems(t *testing.T, db *storage.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(t.Context(), `SELECT count(*) FROM items`).Scan(&n); err != nil {
		t.Fatalf("count items: %v", err)
	}
	return n
}

func TestOpen_MigratesAndBindsDollarParamsByNumber(t *testing.T) {
	storagetest.Each(t, migrations, func(t *testing.T, db *storage.DB) {
		ctx := t.Context()
		// Placeholders out of order: an engine binding by position of
		// appearance would swap id and sku.
		_, err := db.ExecContext(ctx, `INSERT INTO items (sku, qty, id) VALUES ($2, $3, $1)`, "id-1", "sku-1", int64(7))
		if err != nil {
			t.Fatalf("insert: %v", err)
		}
		var id, sku string
		var qty int64
		err = db.QueryRowContext(ctx, `SELECT id, sku, qty FROM items WHERE qty = $2 AND (id = $1 OR sku = $1)`, "id-1", int64(7)).
			Scan(&id, &sku, &qty)
		if err != nil {
			t.Fatalf("select: %v", err)
		}
		if id != "id-1" || sku != "sku-1" || qty != 7 {
			t.Fatalf("got (%q, %q, %d), want (id-1, sku-1, 7)", id, sku, qty)
		}

		// RETURNING and ON CONFLICT, written once for both engines.
		var n int64
		err = db.QueryRowContext(ctx, `INSERT INTO counters (id, n) VALUES ($1, $2)
			ON CONFLICT (id) DO UPDATE SET n = counters.n + excluded.n RETURNING n`, 1, int64(5)).Scan(&n)
		if err != nil {
			t.Fatalf("upsert: %v", err)
		}
		if n != 5 {
			t.Fatalf("upsert returned n = %d, want 5", n)
		}
	})
}

func TestOpen_DialectMatchesEngine(t *testing.T) {
	for _, e := range storagetest.Engines(t) {
		t.Run(e.Name, func(t *testing.T) {
			db := storagetest.Open(t, e, nil)
			if got := db.Dialect(); string(got) != e.Name {
				t.Fatalf("Dialect() = %q, want %q", got, e.Name)
			}
		})
	}
}

func TestOpen_SQLiteSettings(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "not", "there", "yet")
	db, err := storage.Open(t.Context(), storage.SQLiteDSN(dir, "settings"))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if _, err := os.Stat(filepath.Join(dir, "settings.db")); err != nil {
		t.Fatalf("database file: %v", err)
	}

	for pragma, want := range map[string]string{
		"journal_mode": "wal",
		"busy_timeout": "5000",
		"foreign_keys": "1",
		"synchronous":  "1", // NORMAL
	} {
		var got string
		if err := db.QueryRowContext(t.Context(), "PRAGMA "+pragma).Scan(&got); err != nil {
			t.Fatalf("pragma %s: %v", pragma, err)
		}
		if got != want {
			t.Errorf("pragma %s = %q, want %q", pragma, got, want)
		}
	}
}

func TestOpen_RejectsUnknownDSN(t *testing.T) {
	for _, dsn := range []string{
		"",
		"mysql://root@localhost/db",
		"/var/lib/data.db",
		"file:data.db",
		"sqlite:",
		"sqlite:/tmp/data.db?mode=ro",
		"sqlite:file:data.db",
	} {
		db, err := storage.Open(t.Context(), dsn)
		if err == nil {
			_ = db.Close()
			t.Errorf("Open(%q) succeeded, want an error", dsn)
			continue
		}
		if !strings.Contains(err.Error(), "sqlite:") {
			t.Errorf("Open(%q) error %q does not name the accepted forms", dsn, err)
		}
	}
}

func TestOpen_FailsWhenServerUnreachable(t *testing.T) {
	// Nothing listens on port 1; Open pings, so it must report it.
	db, err := storage.Open(t.Context(), "postgres://postgres@127.0.0.1:1/none?sslmode=disable")
	if err == nil {
		_ = db.Close()
		t.Fatal("Open succeeded, want a ping error")
	}
}

func TestMigrate_ReopenKeepsData(t *testing.T) {
	for _, e := range storagetest.Engines(t) {
		t.Run(e.Name, func(t *testing.T) {
			first := storagetest.Open(t, e, migrations)
			if err := insertItem(t.Context(), first, "a", "sku-a", 1); err != nil {
				t.Fatalf("insert: %v", err)
			}
			if err := first.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}

			// A restarted process opens and migrates again: a no-op.
			second := storagetest.Open(t, e, migrations)
			var sku string
			if err := second.QueryRowContext(t.Context(), `SELECT sku FROM items WHERE id = $1`, "a").Scan(&sku); err != nil {
				t.Fatalf("select after reopen: %v", err)
			}
			if sku != "sku-a" {
				t.Fatalf("sku = %q, want sku-a", sku)
			}
		})
	}
}

func TestInTx_CommitsWhenFnSucceeds(t *testing.T) {
	storagetest.Each(t, migrations, func(t *testing.T, db *storage.DB) {
		err := db.InTx(t.Context(), func(tx *sql.Tx) error {
			if err := insertItem(t.Context(), tx, "a", "sku-a", 1); err != nil {
				return err
			}
			return insertItem(t.Context(), tx, "b", "sku-b", 2)
		})
		if err != nil {
			t.Fatalf("InTx: %v", err)
		}
		if n := countItems(t, db); n != 2 {
			t.Fatalf("items = %d, want 2", n)
		}
	})
}

func TestInTx_RollsBackAndReturnsFnError(t *testing.T) {
	errBoom := errors.New("boom")
	storagetest.Each(t, migrations, func(t *testing.T, db *storage.DB) {
		calls := 0
		err := db.InTx(t.Context(), func(tx *sql.Tx) error {
			calls++
			if err := insertItem(t.Context(), tx, "a", "sku-a", 1); err != nil {
				return err
			}
			return fmt.Errorf("after insert: %w", errBoom)
		})
		if !errors.Is(err, errBoom) {
			t.Fatalf("InTx error = %v, want errBoom", err)
		}
		if err.Error() != "after insert: boom" {
			t.Fatalf("InTx changed the error to %q", err)
		}
		if calls != 1 {
			t.Fatalf("fn ran %d times, want 1: a non-transient error is not retried", calls)
		}
		if n := countItems(t, db); n != 0 {
			t.Fatalf("items = %d after rollback, want 0", n)
		}
	})
}

func TestInTx_RetriesTransientConflict(t *testing.T) {
	for _, code := range []string{"40001", "40P01"} {
		t.Run(code, func(t *testing.T) {
			storagetest.Each(t, migrations, func(t *testing.T, db *storage.DB) {
				calls := 0
				err := db.InTx(t.Context(), func(tx *sql.Tx) error {
					calls++
					if err := insertItem(t.Context(), tx, "a", "sku-a", 1); err != nil {
						return err
					}
					if calls == 1 {
						return fmt.Errorf("write: %w", &pgconn.PgError{Code: code})
					}
					return nil
				})
				if err != nil {
					t.Fatalf("InTx: %v", err)
				}
				if calls != 2 {
					t.Fatalf("fn ran %d times, want 2", calls)
				}
				// The first attempt's insert was rolled back, or this would be 2
				// (or the second insert a duplicate key).
				if n := countItems(t, db); n != 1 {
					t.Fatalf("items = %d, want 1", n)
				}
			})
		})
	}
}

func TestInTx_GivesUpOnPersistentConflict(t *testing.T) {
	storagetest.Each(t, migrations, func(t *testing.T, db *storage.DB) {
		calls := 0
		err := db.InTx(t.Context(), func(tx *sql.Tx) error {
			calls++
			return &pgconn.PgError{Code: "40001"}
		})
		if pgErr, ok := errors.AsType[*pgconn.PgError](err); !ok || pgErr.Code != "40001" {
			t.Fatalf("InTx error = %v, want the serialization failure", err)
		}
		if calls < 2 {
			t.Fatalf("fn ran %d times, want retries", calls)
		}
	})
}

func TestInTx_ConcurrentIncrementsLoseNothing(t *testing.T) {
	const workers = 20
	storagetest.Each(t, migrations, func(t *testing.T, db *storage.DB) {
		// SQLite has no FOR UPDATE: its IMMEDIATE transactions already hold the
		// write lock from BEGIN. PostgreSQL must lock the row it read.
		read := `SELECT n FROM counters WHERE id = 1`
		if db.Dialect() == storage.Postgres {
			read += ` FOR UPDATE`
		}
		increment := func(tx *sql.Tx) error {
			var n int64
			if err := tx.QueryRowContext(t.Context(), read).Scan(&n); err != nil {
				return fmt.Errorf("read counter: %w", err)
			}
			// Conditional on the value read: a lost update shows as 0 rows.
			res, err := tx.ExecContext(t.Context(), `UPDATE counters SET n = $1 WHERE id = 1 AND n = $2`, n+1, n)
			if err != nil {
				return fmt.Errorf("write counter: %w", err)
			}
			if rows, err := res.RowsAffected(); err != nil || rows != 1 {
				return fmt.Errorf("counter changed under the transaction (rows %d, err %v)", rows, err)
			}
			return nil
		}

		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for range workers {
			wg.Go(func() { errs <- db.InTx(t.Context(), increment) })
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("InTx: %v", err)
			}
		}

		var n int64
		if err := db.QueryRowContext(t.Context(), `SELECT n FROM counters WHERE id = 1`).Scan(&n); err != nil {
			t.Fatalf("read counter: %v", err)
		}
		if n != workers {
			t.Fatalf("counter = %d, want %d", n, workers)
		}
	})
}

func TestInTx_SQLiteTakesWriteLockAtBegin(t *testing.T) {
	db := storagetest.Open(t, storagetest.Engine{Name: "sqlite", DSN: storage.SQLiteDSN(t.TempDir(), "lock")}, migrations)

	tx, err := db.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	defer func() { _ = tx.Rollback() }()
	var n int64
	if err := tx.QueryRowContext(t.Context(), `SELECT n FROM counters WHERE id = 1`).Scan(&n); err != nil {
		t.Fatalf("read: %v", err)
	}

	// The transaction has only read, yet holds the write lock: another writer
	// waits for it (here until its context ends) instead of slipping in
	// between the read and a later write. With DEFERRED it would succeed.
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if _, err := db.ExecContext(ctx, `UPDATE counters SET n = 5 WHERE id = 1`); err == nil {
		t.Fatal("a second writer got in while a transaction was open")
	}

	if err := tx.Rollback(); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	if _, err := db.ExecContext(t.Context(), `UPDATE counters SET n = 5 WHERE id = 1`); err != nil {
		t.Fatalf("write after the transaction ended: %v", err)
	}
}

func TestIsUniqueViolation(t *testing.T) {
	storagetest.Each(t, migrations, func(t *testing.T, db *storage.DB) {
		ctx := t.Context()
		if err := insertItem(ctx, db, "a", "sku-a", 1); err != nil {
			t.Fatalf("insert: %v", err)
		}
		if err := insertItem(ctx, db, "b", "sku-b", 1); err != nil {
			t.Fatalf("insert: %v", err)
		}

		mustFail := func(err error) error {
			t.Helper()
			if err == nil {
				t.Fatal("the statement succeeded, want an error")
			}
			return err
		}
		duplicateKey := mustFail(insertItem(ctx, db, "a", "sku-c", 1))
		duplicateUnique := mustFail(insertItem(ctx, db, "c", "sku-a", 1))
		_, err := db.ExecContext(ctx, `INSERT INTO items (id, sku, qty) VALUES ($1, $2, NULL)`, "d", "sku-d")
		notNull := mustFail(err)
		_, err = db.ExecContext(ctx, `INSERT INTO nowhere (id) VALUES ($1)`, "e")
		missingTable := mustFail(err)

		for _, tc := range []struct {
			name string
			err  error
			want bool
		}{
			{"duplicate primary key", duplicateKey, true},
			{"duplicate unique column", duplicateUnique, true},
			{"wrapped duplicate", fmt.Errorf("save item: %w", duplicateKey), true},
			{"not null violation", notNull, false},
			{"missing table", missingTable, false},
			{"plain error", errors.New("unique"), false},
			{"nil", nil, false},
		} {
			if got := storage.IsUniqueViolation(tc.err); got != tc.want {
				t.Errorf("%s: IsUniqueViolation(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
			}
		}
	})
}

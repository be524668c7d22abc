package storage

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
)

// pinned opens a SQLite database with a table of numbers 1..5 and returns
// one connection of it, so every statement runs on the same cache.
func pinned(t *testing.T) (*sql.Conn, context.Context) {
	t.Helper()
	ctx := t.Context()
	db, err := Open(ctx, SQLiteDSN(t.TempDir(), "cache"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	for _, q := range []string{
		`CREATE TABLE n (v INTEGER PRIMARY KEY)`,
		`INSERT INTO n (v) VALUES (1), (2), (3), (4), (5)`,
	} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	return conn, ctx
}

// cached lists the queries conn holds prepared.
func cached(t *testing.T, conn *sql.Conn) []string {
	t.Helper()
	var qs []string
	err := conn.Raw(func(dc any) error {
		c, ok := dc.(*stmtCachingConn)
		if !ok {
			return fmt.Errorf("driver connection is %T, not the caching one", dc)
		}
		for q := range c.stmts {
			qs = append(qs, q)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(qs)
	return qs
}

func values(t *testing.T, rows *sql.Rows) []int {
	t.Helper()
	defer rows.Close()
	var out []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestStmtCache_AQueryIsPreparedOnceAndRunAgain(t *testing.T) {
	conn, ctx := pinned(t)
	const q = `SELECT v FROM n WHERE v > $1 ORDER BY v`
	for i := range 3 {
		rows, err := conn.QueryContext(ctx, q, i)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := len(values(t, rows)), 5-i; got != want {
			t.Fatalf("run %d: %d rows, want %d", i, got, want)
		}
	}
	if got := cached(t, conn); !slices.Contains(got, q) || len(slices.DeleteFunc(got, func(s string) bool { return s != q })) != 1 {
		t.Fatalf("cached = %q, want the query once", got)
	}
}

func TestStmtCache_TheSameQueryRunsWhileItsRowsAreOpen(t *testing.T) {
	conn, ctx := pinned(t)
	const q = `SELECT v FROM n WHERE v >= $1 ORDER BY v`
	outer, err := conn.QueryContext(ctx, q, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer outer.Close()
	if !outer.Next() {
		t.Fatal("no first row")
	}
	var first int
	if err := outer.Scan(&first); err != nil {
		t.Fatal(err)
	}
	// A second run must not reset the statement under the open rows.
	inner, err := conn.QueryContext(ctx, q, 4)
	if err != nil {
		t.Fatal(err)
	}
	if got := values(t, inner); !slices.Equal(got, []int{4, 5}) {
		t.Fatalf("inner = %v, want [4 5]", got)
	}
	if got := append([]int{first}, values(t, outer)...); !slices.Equal(got, []int{1, 2, 3, 4, 5}) {
		t.Fatalf("outer = %v, want [1 2 3 4 5]", got)
	}
	// Once closed, the statement serves the next run again.
	rows, err := conn.QueryContext(ctx, q, 5)
	if err != nil {
		t.Fatal(err)
	}
	if got := values(t, rows); !slices.Equal(got, []int{5}) {
		t.Fatalf("after = %v, want [5]", got)
	}
}

func TestStmtCache_AFailedStatementRunsAgain(t *testing.T) {
	conn, ctx := pinned(t)
	const q = `INSERT INTO n (v) VALUES ($1)`
	if _, err := conn.ExecContext(ctx, q, 1); err == nil {
		t.Fatal("a duplicate key was inserted")
	}
	if _, err := conn.ExecContext(ctx, q, 6); err != nil {
		t.Fatalf("the statement failed once and then again: %v", err)
	}
	var n int
	if err := conn.QueryRowContext(ctx, `SELECT COUNT(*) FROM n`).Scan(&n); err != nil || n != 6 {
		t.Fatalf("count = %d, %v; want 6", n, err)
	}
}

func TestStmtCache_SeesSchemaChanges(t *testing.T) {
	conn, ctx := pinned(t)
	const q = `SELECT * FROM n WHERE v = 1`
	cols := func() int {
		rows, err := conn.QueryContext(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		c, err := rows.Columns()
		if err != nil {
			t.Fatal(err)
		}
		return len(c)
	}
	if n := cols(); n != 1 {
		t.Fatalf("columns = %d, want 1", n)
	}
	if _, err := conn.ExecContext(ctx, `ALTER TABLE n ADD COLUMN w INTEGER NOT NULL DEFAULT 0`); err != nil {
		t.Fatal(err)
	}
	if n := cols(); n != 2 {
		t.Fatalf("columns after ALTER = %d, want 2", n)
	}
}

func TestStmtCache_IsBounded(t *testing.T) {
	conn, ctx := pinned(t)
	for i := range maxCachedStmts + 20 {
		var v int
		// Each query text is new, as an IN list of varying length would be.
		q := fmt.Sprintf(`SELECT v FROM n WHERE v = 1 AND %d = %d`, i, i)
		if err := conn.QueryRowContext(ctx, q).Scan(&v); err != nil || v != 1 {
			t.Fatalf("query %d: %d, %v", i, v, err)
		}
	}
	if n := len(cached(t, conn)); n > maxCachedStmts {
		t.Fatalf("%d statements cached, bound is %d", n, maxCachedStmts)
	}
}

func TestStmtCache_ScriptsRunWhole(t *testing.T) {
	conn, ctx := pinned(t)
	script := `INSERT INTO n (v) VALUES (10); INSERT INTO n (v) VALUES (11)`
	if _, err := conn.ExecContext(ctx, script); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.QueryContext(ctx, `SELECT v FROM n WHERE v >= 10 ORDER BY v`)
	if err != nil {
		t.Fatal(err)
	}
	if got := values(t, rows); !slices.Equal(got, []int{10, 11}) {
		t.Fatalf("script inserted %v, want [10 11]", got)
	}
}

func TestStmtCache_WorksInTransactions(t *testing.T) {
	ctx := t.Context()
	db, err := Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "tx.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE c (id INTEGER PRIMARY KEY, n BIGINT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO c (id, n) VALUES (1, 0)`); err != nil {
		t.Fatal(err)
	}
	// The same statements, committed and rolled back in turn.
	for i := range 10 {
		err := db.InTx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, `UPDATE c SET n = n + 1 WHERE id = $1`, 1); err != nil {
				return err
			}
			if i%2 == 1 {
				return errRollback
			}
			return nil
		})
		if err != nil && err != errRollback {
			t.Fatal(err)
		}
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT n FROM c WHERE id = $1`, 1).Scan(&n); err != nil || n != 5 {
		t.Fatalf("n = %d, %v; want 5 (five commits, five rollbacks)", n, err)
	}
}

var errRollback = fmt.Errorf("roll back")

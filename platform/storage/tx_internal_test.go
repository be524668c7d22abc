package storage

import (
	"database/sql"
	"strings"
	"testing"
)

// A real SQLITE_BUSY, as a writer without busy_timeout meets it, is transient.
func TestIsTransient_SQLiteBusy(t *testing.T) {
	dsn := SQLiteDSN(t.TempDir(), "busy")
	db, err := Open(t.Context(), dsn)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if _, err := db.ExecContext(t.Context(), `CREATE TABLE t (n INTEGER)`); err != nil {
		t.Fatalf("create: %v", err)
	}

	// Holds the write lock from BEGIN (IMMEDIATE).
	tx, err := db.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	defer func() { _ = tx.Rollback() }()

	// A plain handle on the same file: no busy_timeout, so it fails at once.
	raw, err := sql.Open("sqlite", strings.TrimPrefix(dsn, sqlitePrefix))
	if err != nil {
		t.Fatalf("open raw: %v", err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	_, err = raw.ExecContext(t.Context(), `INSERT INTO t (n) VALUES (1)`)
	if err == nil {
		t.Fatal("insert succeeded while another connection held the write lock")
	}
	if !isTransient(err) {
		t.Fatalf("isTransient(%v) = false, want true", err)
	}
	if IsUniqueViolation(err) {
		t.Fatalf("IsUniqueViolation(%v) = true, want false", err)
	}
}

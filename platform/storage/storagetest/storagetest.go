// Package storagetest runs one store test suite against every database engine:
// SQLite always, PostgreSQL when MERCATO_TEST_POSTGRES names a server.
package storagetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"testing"

	"github.com/mercato-shop/mercato/platform/storage"
)

// postgresEnv names the environment variable holding the DSN of a PostgreSQL
// server (postgres://...) that tests may create databases on.
const postgresEnv = "MERCATO_TEST_POSTGRES"

// Engine is a database to run tests on.
type Engine struct {
	Name string // "sqlite" or "postgres"
	DSN  string
}

// Engines returns the engines to test on: "sqlite", a fresh file in
// t.TempDir(), and "postgres", a fresh database on the server named by
// MERCATO_TEST_POSTGRES, dropped at cleanup. Without that variable the
// postgres engine is left out with a log line, or the test fails when
// CI=true.
func Engines(t testing.TB) []Engine {
	t.Helper()
	engines, skip := engines(t)
	if skip != "" {
		t.Log(skip)
	}
	return engines
}

// Open opens e.DSN, applies migrations unless nil, and closes the database at
// cleanup. Opening the same Engine twice reaches the same database, as a
// restarted process would.
func Open(t testing.TB, e Engine, migrations fs.FS) *storage.DB {
	t.Helper()
	db, err := storage.Open(t.Context(), e.DSN)
	if err != nil {
		t.Fatalf("open %s: %v", e.Name, err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("close %s: %v", e.Name, err)
		}
	})
	if migrations != nil {
		if err := db.Migrate(t.Context(), migrations); err != nil {
			t.Fatalf("migrate %s: %v", e.Name, err)
		}
	}
	return db
}

// Each runs fn as a subtest per engine, each with a freshly opened and
// migrated database. Without MERCATO_TEST_POSTGRES the postgres subtest is
// skipped (or fails when CI=true).
func Each(t *testing.T, migrations fs.FS, fn func(t *testing.T, db *storage.DB)) {
	t.Helper()
	engines, skip := engines(t)
	for _, e := range engines {
		t.Run(e.Name, func(t *testing.T) {
			fn(t, Open(t, e, migrations))
		})
	}
	if skip != "" {
		t.Run("postgres", func(t *testing.T) { t.Skip(skip) })
	}
}

// engines returns the engines available and, when postgres is not among
// them, the reason to skip it.
func engines(t testing.TB) ([]Engine, string) {
	t.Helper()
	es := []Engine{{Name: "sqlite", DSN: storage.SQLiteDSN(t.TempDir(), "test")}}
	serverDSN := os.Getenv(postgresEnv)
	if serverDSN == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not set; CI must run the PostgreSQL tests", postgresEnv)
		}
		return es, fmt.Sprintf("postgres skipped: set %s to a server DSN to run it", postgresEnv)
	}
	return append(es, Engine{Name: "postgres", DSN: createPostgresDB(t, serverDSN)}), ""
}

// createPostgresDB creates a database with a unique name on the server named
// by serverDSN, drops it at cleanup, and returns its DSN.
func createPostgresDB(t testing.TB, serverDSN string) string {
	t.Helper()
	u, err := url.Parse(serverDSN)
	if err != nil {
		// The error may quote the DSN, password included.
		t.Fatalf("%s is not a postgres:// URL", postgresEnv)
	}
	server, err := storage.Open(t.Context(), serverDSN)
	if err != nil {
		t.Fatalf("%s=%s: %v", postgresEnv, u.Redacted(), err)
	}

	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails
	name := "mercato_test_" + hex.EncodeToString(b[:])
	if _, err := server.ExecContext(t.Context(), "CREATE DATABASE "+name); err != nil {
		_ = server.Close()
		t.Fatalf("create database %s on %s: %v", name, u.Redacted(), err)
	}
	t.Cleanup(func() {
		// t.Context() is already canceled here. FORCE ends sessions a test left open.
		if _, err := server.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
		if err := server.Close(); err != nil {
			t.Errorf("close %s: %v", u.Redacted(), err)
		}
	})

	u.Path = "/" + name
	return u.String()
}

// Package storage opens a service's database by DSN, SQLite (modernc.org/sqlite)
// or PostgreSQL (pgx), applies its goose migrations and runs transactions that
// retry on transient conflicts.
//
// SQL is written once for both engines: $1-style placeholders, portable types
// (TEXT, BIGINT, INTEGER), ON CONFLICT ... DO NOTHING/UPDATE and RETURNING.
// Callers pass SQL text; on SQLite each connection keeps the statements it
// has run prepared (stmtcache.go), as pgx does on PostgreSQL.
package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	"modernc.org/sqlite"
)

// Dialect names the database engine behind a DB.
type Dialect string

// The supported engines.
const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// DB is a *sql.DB that knows its dialect.
type DB struct {
	*sql.DB
	dialect Dialect
	// writer serialises this process's SQLite writers (InTx, ExecContext):
	// they queue here in order instead of in SQLite's busy handler, whose
	// sleeps of up to 100 ms show up as tail latency under contention.
	writer *sync.Mutex
}

// ExecContext runs a statement outside a transaction; on SQLite it waits
// its turn among this process's writers.
func (db *DB) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if db.writer != nil {
		db.writer.Lock()
		defer db.writer.Unlock()
	}
	return db.DB.ExecContext(ctx, query, args...)
}

// Dialect reports the engine behind db.
func (db *DB) Dialect() Dialect { return db.dialect }

const sqlitePrefix = "sqlite:"

// sqliteParams configure every SQLite connection. WAL lets readers run beside
// the writer; IMMEDIATE transactions take the write lock at BEGIN, where
// busy_timeout makes concurrent writers queue instead of failing with
// SQLITE_BUSY when a read transaction later tries to write.
const sqliteParams = "_busy_timeout=5000&_foreign_keys=on&_journal_mode=WAL&_synchronous=NORMAL&_txlock=immediate"

// Open opens the database named by dsn and pings it. Accepted forms:
// "postgres://..." or "postgresql://..." (PostgreSQL through pgx) and
// "sqlite:<path>" (a SQLite file, whose parent directory is created).
func Open(ctx context.Context, dsn string) (*DB, error) {
	var driver, source string
	var dialect Dialect
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		driver, source, dialect = "pgx", dsn, Postgres
	case strings.HasPrefix(dsn, sqlitePrefix):
		path := strings.TrimPrefix(dsn, sqlitePrefix)
		// The driver reads everything after '?' as its own parameters and
		// treats "file:" names as URIs; both would override ours.
		if path == "" || strings.Contains(path, "?") || strings.HasPrefix(path, "file:") {
			return nil, fmt.Errorf("open database: sqlite DSN wants a plain file path, as in sqlite:/data/name.db, got %q", dsn)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			return nil, fmt.Errorf("open sqlite database %s: %w", path, err)
		}
		driver, source, dialect = "sqlite", path+"?"+sqliteParams, SQLite
	default:
		// The DSN is not echoed: it may carry a password.
		return nil, errors.New("open database: unsupported DSN, want postgres://..., postgresql://... or sqlite:<path>")
	}

	var sqlDB *sql.DB
	if dialect == SQLite {
		base, err := sqlite.NewConnector(source)
		if err != nil {
			return nil, fmt.Errorf("open %s database: %w", dialect, err)
		}
		sqlDB = sql.OpenDB(stmtCachingConnector{base})
	} else {
		var err error
		if sqlDB, err = sql.Open(driver, source); err != nil {
			return nil, fmt.Errorf("open %s database: %w", dialect, err)
		}
	}
	if err := sqlDB.PingContext(ctx); err != nil {
		_ = sqlDB.Close()
		return nil, fmt.Errorf("ping %s database: %w", dialect, err)
	}
	d := &DB{DB: sqlDB, dialect: dialect}
	if dialect == SQLite {
		d.writer = &sync.Mutex{}
	}
	return d, nil
}

// SQLiteDSN returns the DSN of the SQLite database file name+".db" in dir.
func SQLiteDSN(dir, name string) string {
	return sqlitePrefix + filepath.Join(dir, name+".db")
}

// Migrate applies the pending goose migrations found at the root of fsys
// (NNNNN_name.sql files with "-- +goose Up" / "-- +goose Down" sections).
func (db *DB) Migrate(ctx context.Context, fsys fs.FS) error {
	opts := []goose.ProviderOption{goose.WithDisableGlobalRegistry(true)}
	var dialect goose.Dialect
	switch db.dialect {
	case Postgres:
		dialect = goose.DialectPostgres
		// Replicas starting together take turns; the advisory lock is per database.
		locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, 300))
		if err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	case SQLite:
		dialect = goose.DialectSQLite3
	default:
		return fmt.Errorf("migrate: unknown dialect %q", db.dialect)
	}
	p, err := goose.NewProvider(dialect, db.DB, fsys, opts...)
	if err != nil {
		return fmt.Errorf("migrate: load migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

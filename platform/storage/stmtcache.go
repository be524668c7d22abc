package storage

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"reflect"
)

// maxCachedStmts bounds the statements a SQLite connection keeps prepared.
// A service's SQL is a few dozen fixed strings; queries built at run time
// (IN lists of varying length) would otherwise grow the cache without end.
const maxCachedStmts = 128

// sqliteConn is what a modernc.org/sqlite connection implements; the
// wrapper forwards all of it, as the driver's NewConnector asks.
type sqliteConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

// preparedStmt is a driver statement that runs with a context.
type preparedStmt interface {
	driver.Stmt
	driver.StmtExecContext
	driver.StmtQueryContext
}

// stmtCachingConnector opens SQLite connections that keep their statements
// prepared (see stmtCachingConn).
type stmtCachingConnector struct {
	driver.Connector
}

func (c stmtCachingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	base, ok := conn.(sqliteConn)
	if !ok {
		_ = conn.Close()
		return nil, fmt.Errorf("sqlite connection %T lacks the driver interfaces the statement cache forwards", conn)
	}
	return &stmtCachingConn{sqliteConn: base, stmts: make(map[string]*cachedStmt)}, nil
}

// stmtCachingConn prepares each distinct query once per connection and runs
// it again from the prepared statement. SQLite parses and plans a statement
// every time it is run from text, and on a service's hot paths (short
// lookups and single-row writes) that parsing took as long as the work.
// database/sql uses a connection from one goroutine at a time, so the cache
// needs no lock. A statement whose rows are still open is not shared: a
// second run of the same query then goes through the uncached path.
type stmtCachingConn struct {
	sqliteConn
	stmts map[string]*cachedStmt
}

type cachedStmt struct {
	stmt preparedStmt
	busy bool // rows of a query on stmt are open
}

// Unwrap returns the driver's connection, as modernc.org/sqlite asks of wrappers.
func (c *stmtCachingConn) Unwrap() driver.Conn { return c.sqliteConn }

// stmt returns the prepared statement of query, preparing it on first use;
// nil means run query uncached.
func (c *stmtCachingConn) stmt(ctx context.Context, query string) (*cachedStmt, error) {
	if s, ok := c.stmts[query]; ok {
		if s.busy {
			return nil, nil
		}
		return s, nil
	}
	if len(c.stmts) >= maxCachedStmts {
		return nil, nil
	}
	st, err := c.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	ps, ok := st.(preparedStmt)
	if !ok {
		_ = st.Close()
		return nil, nil
	}
	s := &cachedStmt{stmt: ps}
	c.stmts[query] = s
	return s, nil
}

func (c *stmtCachingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	s, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	if s == nil {
		return c.sqliteConn.ExecContext(ctx, query, args)
	}
	return s.stmt.ExecContext(ctx, args)
}

func (c *stmtCachingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	s, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	if s == nil {
		return c.sqliteConn.QueryContext(ctx, query, args)
	}
	rows, err := s.stmt.QueryContext(ctx, args)
	if err != nil {
		return nil, err
	}
	s.busy = true
	return &cachedRows{Rows: rows, stmt: s}, nil
}

// Close finalizes the cached statements, then closes the connection.
func (c *stmtCachingConn) Close() error {
	var errs []error
	for q, s := range c.stmts {
		errs = append(errs, s.stmt.Close())
		delete(c.stmts, q)
	}
	errs = append(errs, c.sqliteConn.Close())
	return errors.Join(errs...)
}

// cachedRows frees its statement for the next run when closed.
type cachedRows struct {
	driver.Rows
	stmt *cachedStmt
}

func (r *cachedRows) Close() error {
	r.stmt.busy = false
	return r.Rows.Close()
}

// The driver's column metadata, which database/sql's ColumnTypes reads.

func (r *cachedRows) ColumnTypeDatabaseTypeName(i int) string {
	if ct, ok := r.Rows.(driver.RowsColumnTypeDatabaseTypeName); ok {
		return ct.ColumnTypeDatabaseTypeName(i)
	}
	return ""
}

func (r *cachedRows) ColumnTypeLength(i int) (int64, bool) {
	if ct, ok := r.Rows.(driver.RowsColumnTypeLength); ok {
		return ct.ColumnTypeLength(i)
	}
	return 0, false
}

func (r *cachedRows) ColumnTypeNullable(i int) (nullable, ok bool) {
	if ct, ok := r.Rows.(driver.RowsColumnTypeNullable); ok {
		return ct.ColumnTypeNullable(i)
	}
	return false, false
}

func (r *cachedRows) ColumnTypePrecisionScale(i int) (precision, scale int64, ok bool) {
	if ct, ok := r.Rows.(driver.RowsColumnTypePrecisionScale); ok {
		return ct.ColumnTypePrecisionScale(i)
	}
	return 0, 0, false
}

func (r *cachedRows) ColumnTypeScanType(i int) reflect.Type {
	if ct, ok := r.Rows.(driver.RowsColumnTypeScanType); ok {
		return ct.ColumnTypeScanType(i)
	}
	return reflect.TypeFor[any]()
}

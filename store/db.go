package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// querier runs SQL on either dialect: a pool, a single connection or a transaction. SQL
// uses $1, $2, ... placeholders, which both PostgreSQL and modernc SQLite bind.
type querier interface {
	exec(ctx context.Context, query string, args ...any) (int64, error)
	query(ctx context.Context, query string, args ...any) (rows, error)
}

// rows is the part of pgx.Rows and *sql.Rows the store reads.
type rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

// database is a querier that can also begin transactions.
type database interface {
	querier
	inTx(ctx context.Context, fn func(q querier) error) error
	ping(ctx context.Context) error
	close() error
}

// ---- PostgreSQL (pgxpool) ----

type pgDB struct{ pool *pgxpool.Pool }

type pgQ struct {
	q interface {
		Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
		Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
		CopyFrom(ctx context.Context, table pgx.Identifier, cols []string, src pgx.CopyFromSource) (int64, error)
	}
}

// copier bulk-inserts rows with COPY; only PostgreSQL queriers are copiers.
type copier interface {
	copyFrom(ctx context.Context, table string, cols []string, rows [][]any) (int64, error)
}

func (p pgQ) copyFrom(ctx context.Context, table string, cols []string, rows [][]any) (int64, error) {
	return p.q.CopyFrom(ctx, pgx.Identifier{table}, cols, pgx.CopyFromRows(rows))
}

func (p pgQ) exec(ctx context.Context, query string, args ...any) (int64, error) {
	tag, err := p.q.Exec(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

func (p pgQ) query(ctx context.Context, query string, args ...any) (rows, error) {
	r, err := p.q.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return r, nil
}

func (d pgDB) exec(ctx context.Context, query string, args ...any) (int64, error) {
	return pgQ{d.pool}.exec(ctx, query, args...)
}

func (d pgDB) query(ctx context.Context, query string, args ...any) (rows, error) {
	return pgQ{d.pool}.query(ctx, query, args...)
}

func (d pgDB) inTx(ctx context.Context, fn func(q querier) error) error {
	return pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error { return fn(pgQ{tx}) })
}

func (d pgDB) ping(ctx context.Context) error { return d.pool.Ping(ctx) }

func (d pgDB) close() error { d.pool.Close(); return nil }

// ---- SQLite (database/sql, one connection) ----

type sqlDB struct{ db *sql.DB }

type sqlQ struct {
	q interface {
		ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
		QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	}
}

type sqlRows struct{ *sql.Rows }

func (r sqlRows) Close() { _ = r.Rows.Close() }

func (s sqlQ) exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := s.q.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (s sqlQ) query(ctx context.Context, query string, args ...any) (rows, error) {
	r, err := s.q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return sqlRows{r}, nil
}

func (d sqlDB) exec(ctx context.Context, query string, args ...any) (int64, error) {
	return sqlQ{d.db}.exec(ctx, query, args...)
}

func (d sqlDB) query(ctx context.Context, query string, args ...any) (rows, error) {
	return sqlQ{d.db}.query(ctx, query, args...)
}

func (d sqlDB) inTx(ctx context.Context, fn func(q querier) error) (err error) {
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if err = fn(sqlQ{tx}); err != nil {
		return err
	}
	return tx.Commit()
}

func (d sqlDB) ping(ctx context.Context) error { return d.db.PingContext(ctx) }

func (d sqlDB) close() error { return d.db.Close() }

// ---- values shared by both dialects ----

// utcMicro is t in UTC at the microsecond precision both databases keep.
func utcMicro(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}

// ts is the argument for a time column: NULL for the zero time, a timestamptz for
// PostgreSQL, microseconds since the epoch for SQLite.
func (s *Store) ts(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	if s.pg {
		return utcMicro(t)
	}
	return t.UnixMicro()
}

// tsScan scans a time column of either dialect; NULL scans as the zero time.
type tsScan struct{ t *time.Time }

func (x tsScan) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*x.t = time.Time{}
	case time.Time:
		*x.t = v.UTC()
	case int64:
		*x.t = time.UnixMicro(v).UTC()
	default:
		return fmt.Errorf("store: cannot scan %T as a time", src)
	}
	return nil
}

// textScan scans text or JSON of either dialect into a string.
type textScan struct{ s *string }

func (x textScan) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*x.s = ""
	case string:
		*x.s = v
	case []byte:
		*x.s = string(v)
	default:
		return fmt.Errorf("store: cannot scan %T as text", src)
	}
	return nil
}

// boolScan scans a boolean of either dialect (SQLite keeps 0/1).
type boolScan struct{ b *bool }

func (x boolScan) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*x.b = false
	case bool:
		*x.b = v
	case int64:
		*x.b = v != 0
	default:
		return fmt.Errorf("store: cannot scan %T as a boolean", src)
	}
	return nil
}

// intScan scans an integer count of either dialect.
type intScan struct{ n *int }

func (x intScan) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*x.n = 0
	case int64:
		*x.n = int(v)
	case int32:
		*x.n = int(v)
	case float64:
		*x.n = int(v)
	default:
		return fmt.Errorf("store: cannot scan %T as an integer", src)
	}
	return nil
}

// list is the argument for a list of strings matched with s.in: a text[] for PostgreSQL,
// a JSON array for SQLite's json_each.
func (s *Store) list(v []string) any {
	if v == nil {
		v = []string{}
	}
	if s.pg {
		return v
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// in is "col IN the list bound to placeholder n", in one round trip for any list length.
func (s *Store) in(col string, n int) string {
	if s.pg {
		return fmt.Sprintf("%s = ANY($%d::text[])", col, n)
	}
	return fmt.Sprintf("%s IN (SELECT value FROM json_each($%d))", col, n)
}

// collect reads every row with scan and closes rows.
func collect[T any](r rows, scan func(r rows) (T, error)) ([]T, error) {
	defer r.Close()
	var out []T
	for r.Next() {
		v, err := scan(r)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, r.Err()
}

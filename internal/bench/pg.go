package bench

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5"
)

// CreateDatabase creates database name on the server of adminDSN (a URL) and returns a DSN
// for it.
func CreateDatabase(ctx context.Context, adminDSN, name string) (string, error) {
	conn, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	u, err := url.Parse(adminDSN)
	if err != nil {
		return "", err
	}
	u.Path = "/" + name
	return u.String(), nil
}

// DropDatabase drops database name (WITH FORCE).
func DropDatabase(ctx context.Context, adminDSN, name string) error {
	conn, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	return err
}

// Outbox summarizes the conversions table.
type Outbox struct {
	Rows    int
	ByState map[string]int
	Leased  int // rows with a lease owner or lease time, whatever their state
}

// ReadOutbox counts the conversions table of dsn by state.
func ReadOutbox(ctx context.Context, dsn string) (Outbox, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return Outbox{}, err
	}
	defer conn.Close(ctx)
	o := Outbox{ByState: map[string]int{}}
	rows, err := conn.Query(ctx, "SELECT state, count(*) FROM conversions GROUP BY state")
	if err != nil {
		return o, err
	}
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			return o, err
		}
		o.ByState[s] = n
		o.Rows += n
	}
	if err := rows.Err(); err != nil {
		return o, err
	}
	err = conn.QueryRow(ctx, "SELECT count(*) FROM conversions WHERE lease_owner <> '' OR lease_until IS NOT NULL").Scan(&o.Leased)
	return o, err
}

// CountRows counts the conversions of dsn matching where (an SQL condition).
func CountRows(ctx context.Context, dsn, where string) (int, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	var n int
	err = conn.QueryRow(ctx, "SELECT count(*) FROM conversions WHERE "+where).Scan(&n)
	return n, err
}

// Row is one conversion's key, platform and state.
type Row struct{ Key, Destination, Platform, State, Reason string }

// ReadRows lists every conversion's key, destination, platform, state and reason.
func ReadRows(ctx context.Context, dsn string) ([]Row, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT key, destination, platform, state, reason FROM conversions")
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Row, error) {
		var x Row
		err := r.Scan(&x.Key, &x.Destination, &x.Platform, &x.State, &x.Reason)
		return x, err
	})
}

// DumpTables returns every row of every table in the public schema as JSON text, one row a
// line, prefixed by its table name: what a "no raw PII at rest" check searches.
func DumpTables(ctx context.Context, dsn string) (string, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1")
	if err != nil {
		return "", err
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, t := range tables {
		rows, err := conn.Query(ctx, "SELECT row_to_json(t)::text FROM "+pgx.Identifier{t}.Sanitize()+" t")
		if err != nil {
			return "", fmt.Errorf("dump %s: %w", t, err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return "", fmt.Errorf("dump %s: %w", t, err)
		}
		for _, l := range lines {
			b.WriteString(t)
			b.WriteString(": ")
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.String(), nil
}

package store_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
)

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// rawPII are the raw values the test captures arrive from; every spelling a careless
// write could store is checked.
var rawPII = []struct{ email, phoneE164, phoneNational string }{
	{"Jane.Doe+ads@Example.com", "+14155550134", "(415) 555-0134"},
	{"o.brien@mail.example.ie", "+353861234567", "086 123 4567"},
}

// TestNoRawPIIAtRest ingests captures and conversions hashed from known raw emails and
// phones, dumps every table of the database as text and asserts that no raw value, in any
// spelling, appears in it, while the hashes do (so the dump really covers the data).
func TestNoRawPIIAtRest(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  func(t testing.TB) store.Config
		dump func(t *testing.T, cfg store.Config) string
	}{
		{"sqlite", sqliteConfig, dumpSQLite},
		{"postgres", postgresConfig, dumpPostgres},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := tc.cfg(t)
			s := openStore(t, cfg)
			ctx := context.Background()

			var caps []store.IdentityCapture
			var convs []store.Conversion
			var hashes []string
			for i, p := range rawPII {
				email := strings.ToLower(strings.TrimSpace(p.email))
				ids := pii.Set{"email": sha(email), "phone/e164": sha(p.phoneE164), "phone/digits": sha(strings.TrimPrefix(p.phoneE164, "+"))}
				for _, h := range ids {
					hashes = append(hashes, h)
				}
				subject := "email:" + ids["email"]
				caps = append(caps, store.IdentityCapture{SubjectKey: subject, CapturedAt: at(i), Identifiers: ids,
					IP: "192.0.2.10", UserAgent: "Mozilla/5.0", Consent: store.Consent{AdUserData: store.ConsentGranted}})
				c := store.Conversion{Key: fmt.Sprint("k", i), Destination: "meta", Platform: "meta", Rule: "won",
					OccurredAt: at(i), State: store.StateReady, SubjectKeys: []string{subject},
					Identity: store.Identity{SubjectKey: subject, Identifiers: ids}}
				convs = append(convs, c)
				w := c
				w.Key, w.State, w.Identity = fmt.Sprint("w", i), store.StateAwaitingIdentity, store.Identity{}
				convs = append(convs, w)
			}
			_, err := s.UpsertIdentities(ctx, caps[:1])
			require.NoError(t, err)
			_, err = s.WriteBatch(ctx, store.Batch{Identities: caps, Conversions: convs,
				StageCounts: []store.StageCount{{Day: at(0), Source: "hubspot", Rule: "won", Count: 2}}})
			require.NoError(t, err)

			dump := strings.ToLower(tc.dump(t, cfg))
			for _, h := range hashes {
				require.Contains(t, dump, h, "the dump covers the stored identifiers")
			}
			for _, p := range rawPII {
				local, domain, _ := strings.Cut(strings.ToLower(p.email), "@")
				digits := strings.TrimPrefix(p.phoneE164, "+")
				for _, raw := range []string{p.email, local, domain, p.phoneE164, digits, p.phoneNational,
					strings.Map(func(r rune) rune {
						if r >= '0' && r <= '9' {
							return r
						}
						return -1
					}, p.phoneNational)} {
					require.NotContains(t, dump, strings.ToLower(raw), "a raw identifier is stored")
				}
			}
		})
	}
}

// dumpSQLite renders every row of every table of the SQLite file as text.
func dumpSQLite(t *testing.T, cfg store.Config) string {
	db, err := sql.Open("sqlite", "file:"+cfg.Path+"?mode=ro")
	require.NoError(t, err)
	defer db.Close()
	tables := queryStrings(t, db, `SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`)
	require.Contains(t, tables, "conversions")
	var b strings.Builder
	for _, table := range tables {
		cols := queryStrings(t, db, `SELECT name FROM pragma_table_info(?)`, table)
		quoted := make([]string, len(cols))
		for i, c := range cols {
			quoted[i] = fmt.Sprintf("quote(%q)", c)
		}
		for _, row := range queryStrings(t, db, fmt.Sprintf(`SELECT %s FROM %q`, strings.Join(quoted, " || ',' || "), table)) {
			fmt.Fprintf(&b, "%s: %s\n", table, row)
		}
	}
	return b.String()
}

func queryStrings(t *testing.T, db *sql.DB, q string, args ...any) []string {
	t.Helper()
	rows, err := db.Query(q, args...)
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		out = append(out, s)
	}
	require.NoError(t, rows.Err())
	return out
}

// dumpPostgres renders every row of every table in the database's schema as text.
func dumpPostgres(t *testing.T, cfg store.Config) string {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, cfg.DSN)
	require.NoError(t, err)
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT table_name::text FROM information_schema.tables
		WHERE table_schema = current_schema() ORDER BY 1`)
	require.NoError(t, err)
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Contains(t, tables, "conversions")
	var b strings.Builder
	for _, table := range tables {
		rows, err := conn.Query(ctx, fmt.Sprintf(`SELECT t::text FROM %s AS t`, pgx.Identifier{table}.Sanitize()))
		require.NoError(t, err)
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		for _, l := range lines {
			fmt.Fprintf(&b, "%s: %s\n", table, l)
		}
	}
	return b.String()
}

func at(h int) time.Time { return time.Date(2026, 3, 2, 10+h, 0, 0, 0, time.UTC) }

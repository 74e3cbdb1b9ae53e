package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/internal/testenv"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/store/storetest"
)

// postgresConfig points at a fresh database on the test server; it fails the test, with
// how to start the server, when CLOSEDLOOP_TEST_POSTGRES_DSN is unset.
func postgresConfig(t testing.TB) store.Config {
	cfg := store.DefaultConfig()
	cfg.Driver, cfg.DSN, cfg.Path = store.DriverPostgres, testenv.PostgresDSN(t), ""
	return cfg
}

func openPostgres(t *testing.T) *store.Store {
	return openStore(t, postgresConfig(t))
}

func TestPostgres(t *testing.T) {
	t.Parallel()
	storetest.Run(t, openPostgres)
}

// The COPY fast path of WriteBatch meets a key another transaction inserts between the
// batch's existence check and its COPY (two workers on one partition during a
// rebalance): the COPY waits for that transaction, fails on the primary key once it
// commits, and the batch is inserted again with ON CONFLICT DO NOTHING: the other row is
// kept, the rest created, nothing fails.
func TestPostgresWriteBatchYieldsToAConcurrentWriterOfAKey(t *testing.T) {
	t.Parallel()
	cfg := postgresConfig(t)
	s := openStore(t, cfg)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, cfg.DSN)
	require.NoError(t, err)
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `INSERT INTO conversions (key, kind, destination, platform, rule, occurred_at, state, next_attempt_at, created_at, updated_at)
		VALUES ('k-taken', 'conversion', 'other', 'google', 'won', now(), 'accepted', now(), now(), now())`)
	require.NoError(t, err)

	now := time.Now().UTC().Truncate(time.Second)
	mk := func(key string) store.Conversion {
		return store.Conversion{Key: key, Kind: store.KindConversion, Destination: "google", Platform: "google", Rule: "won",
			OccurredAt: now.Add(-time.Hour), State: store.StateReady}
	}
	type result struct {
		res store.BatchResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := s.WriteBatch(ctx, store.Batch{Conversions: []store.Conversion{mk("k-new-1"), mk("k-taken"), mk("k-new-2")}})
		done <- result{res, err}
	}()
	// The batch's COPY now waits on the uncommitted k-taken row.
	require.Eventually(t, func() bool {
		var n int
		err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`).Scan(&n)
		return err == nil && n > 0
	}, time.Minute, 20*time.Millisecond, "the batch's COPY should wait for the other transaction")
	require.NoError(t, tx.Commit(ctx))
	r := <-done
	require.NoError(t, r.err)
	require.ElementsMatch(t, []string{"k-new-1", "k-new-2"}, r.res.CreatedKeys)
	require.Equal(t, 1, r.res.Existing)
	taken, err := s.Get(ctx, "k-taken")
	require.NoError(t, err)
	require.Equal(t, "other", taken.Destination, "the concurrent writer's row is kept")
}

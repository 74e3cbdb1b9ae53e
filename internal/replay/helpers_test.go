package replay_test

import (
	"context"
	"database/sql"
	"flag"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/config"
	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/internal/replay"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
	"github.com/closedloop/closedloop/uploader/platforms"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx" for row counts
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/replay")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testNow is the clock of the expiry forecast in the file tests.
var testNow = time.Date(2024, 5, 10, 0, 0, 0, 0, time.UTC)

func testdata(name string) string { return filepath.Join("..", "..", "testdata", "replay", name) }

// loadConfig loads testdata/replay/config.yaml.
func loadConfig(t testing.TB) *config.Config {
	t.Helper()
	cfg, err := config.Load(testdata("config.yaml"), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	return cfg
}

// openSQLite opens a real, migrated SQLite store in a temp dir and a second handle on the
// same file for row counts.
func openSQLite(t testing.TB) (*store.Store, *sql.DB) {
	t.Helper()
	cfg := store.DefaultConfig()
	cfg.Path = filepath.Join(t.TempDir(), "closedloop.db")
	return openStore(t, cfg, "sqlite", cfg.Path)
}

func openStore(t testing.TB, cfg store.Config, driver, dsn string) (*store.Store, *sql.DB) {
	t.Helper()
	// Open's migration goroutine waits for ctx to end: cancel it so goleak sees none left.
	ctx, cancel := context.WithCancel(context.Background())
	st, err := store.Open(ctx, cfg, zap.NewNop())
	require.NoError(t, err)
	db, err := sql.Open(driver, dsn)
	require.NoError(t, err)
	t.Cleanup(func() {
		cancel()
		require.NoError(t, db.Close())
		require.NoError(t, st.Close())
	})
	return st, db
}

// tableCounts counts the rows of every table a replay could write to.
func tableCounts(t testing.TB, db *sql.DB) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, table := range []string{"conversions", "identities", "clicks", "conversion_subjects", "stage_counts"} {
		var n int
		require.NoError(t, db.QueryRow("SELECT count(*) FROM "+table).Scan(&n), table)
		out[table] = n
	}
	return out
}

// newReplayer builds a Replayer for cfg and st like `closedloop replay` does.
func newReplayer(t testing.TB, cfg *config.Config, st replay.Store, now time.Time) *replay.Replayer {
	t.Helper()
	return newReplayerWith(t, cfg, st, now, 0)
}

func newReplayerWith(t testing.TB, cfg *config.Config, st replay.Store, now time.Time, concurrency int) *replay.Replayer {
	t.Helper()
	mapping, err := cfg.CompileMappings()
	require.NoError(t, err)
	plats := map[string]uploader.Platform{}
	for _, name := range cfg.DestinationNames() {
		p, err := platforms.New(name, cfg.Destinations[name], zap.NewNop())
		require.NoError(t, err)
		plats[name] = p
	}
	var log *zap.Logger
	if tt, ok := t.(*testing.T); ok {
		log = zaptest.NewLogger(tt, zaptest.Level(zap.WarnLevel))
	} else {
		log = zap.NewNop()
	}
	r, err := replay.New(replay.Config{
		Kafka:       cfg.Kafka,
		Mapping:     func() *crm.Mapping { return mapping },
		Normalizer:  pii.Normalizer{DefaultRegion: cfg.PII.DefaultRegion},
		Store:       st,
		Platforms:   plats,
		Log:         log,
		Now:         func() time.Time { return now },
		Concurrency: concurrency,
	})
	require.NoError(t, err)
	return r
}

// byDest indexes a summary's destinations.
func byDest(s *replay.Summary) map[string]replay.DestinationSummary {
	out := map[string]replay.DestinationSummary{}
	for _, d := range s.ByDestination {
		out[d.Destination] = d
	}
	return out
}

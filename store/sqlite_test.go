package store_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/store/storetest"
)

func sqliteConfig(t testing.TB) store.Config {
	cfg := store.DefaultConfig()
	cfg.Path = filepath.Join(t.TempDir(), "closedloop.db")
	return cfg
}

func openSQLite(t *testing.T) *store.Store {
	return openStore(t, sqliteConfig(t))
}

func openStore(t testing.TB, cfg store.Config) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), cfg, zaptest.NewLogger(t))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func TestSQLite(t *testing.T) {
	t.Parallel()
	storetest.Run(t, openSQLite)
}

func TestSQLiteFileSettings(t *testing.T) {
	t.Parallel()
	cfg := sqliteConfig(t)
	cfg.Path = filepath.Join(t.TempDir(), "nested", "dir", "closedloop.db") // directories are created
	s := openStore(t, cfg)
	require.Equal(t, store.DriverSQLite, s.Dialect())
	require.NoError(t, s.Ping(context.Background()))

	db, err := sql.Open("sqlite", "file:"+cfg.Path)
	require.NoError(t, err)
	defer db.Close()
	var mode string
	require.NoError(t, db.QueryRow(`PRAGMA journal_mode`).Scan(&mode))
	require.Equal(t, "wal", mode, "the file is in WAL mode")
}

package store_test

import (
	"context"
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

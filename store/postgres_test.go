package store_test

import (
	"testing"

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

package store_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/store"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	pg := func(mod func(*store.Config)) store.Config {
		c := store.DefaultConfig()
		c.Driver, c.DSN = store.DriverPostgres, "postgres://u:secret-pw@127.0.0.1:5432/db"
		mod(&c)
		return c
	}
	lite := func(mod func(*store.Config)) store.Config {
		c := store.DefaultConfig()
		mod(&c)
		return c
	}
	for _, tc := range []struct {
		name string
		cfg  store.Config
		want []string
	}{
		{"default sqlite", store.DefaultConfig(), nil},
		{"postgres", pg(func(*store.Config) {}), nil},
		{"no driver", lite(func(c *store.Config) { c.Driver = "" }), []string{`store.driver: required, "postgres" or "sqlite"`}},
		{"unknown driver", lite(func(c *store.Config) { c.Driver = "mysql" }), []string{`store.driver: must be "postgres" or "sqlite", got "mysql"`}},
		{"postgres without dsn", pg(func(c *store.Config) { c.DSN = "" }), []string{"store.dsn: required when driver is postgres"}},
		{"bad dsn, secret not echoed", pg(func(c *store.Config) { c.DSN = "postgres://u:secret-pw@host:notaport/db" }),
			[]string{"store.dsn: not a valid PostgreSQL URL or keyword/value connection string"}},
		{"pool size", pg(func(c *store.Config) { c.MaxConns = 0 }), []string{"store.max_conns: must be at least 1, got 0"}},
		{"sqlite without path", lite(func(c *store.Config) { c.Path = "" }), []string{"store.path: required when driver is sqlite"}},
		{"negative busy timeout", lite(func(c *store.Config) { c.BusyTimeout = -time.Second }), []string{"store.busy_timeout: must not be negative, got -1s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var got []string
			for _, err := range tc.cfg.Validate() {
				got = append(got, err.Error())
			}
			require.Equal(t, tc.want, got)
		})
	}
}

func TestDefaultConfig(t *testing.T) {
	t.Parallel()
	c := store.DefaultConfig()
	require.Equal(t, store.DriverSQLite, c.Driver)
	require.True(t, c.MigrateOnStart)
	require.Equal(t, 8, c.MaxConns)
	require.Equal(t, 5*time.Second, c.BusyTimeout)
}

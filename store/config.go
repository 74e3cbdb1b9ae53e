package store

import (
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Drivers Config.Driver accepts.
const (
	DriverPostgres = "postgres"
	DriverSQLite   = "sqlite"
)

// Config says which database the store uses and how. It is the `store:` section of the
// config file; DefaultConfig gives the values a file starts from.
type Config struct {
	Driver         string        `yaml:"driver"`           // "postgres" | "sqlite"
	DSN            string        `yaml:"dsn"`              // postgres URL or keyword/value string (may come from ${ENV})
	Path           string        `yaml:"path"`             // sqlite file path
	MigrateOnStart bool          `yaml:"migrate_on_start"` // Open migrates up; default true
	MaxConns       int           `yaml:"max_conns"`        // postgres pool size, default 8
	BusyTimeout    time.Duration `yaml:"busy_timeout"`     // sqlite wait for a lock held by another process, default 5s
}

// DefaultConfig is an embedded SQLite file in the working directory, migrated on start.
func DefaultConfig() Config {
	return Config{
		Driver:         DriverSQLite,
		Path:           "closedloop.db",
		MigrateOnStart: true,
		MaxConns:       8,
		BusyTimeout:    5 * time.Second,
	}
}

// Validate returns every problem with c, each naming its YAML path under "store.". Error
// texts never include the DSN, which may hold a password.
func (c Config) Validate() []error {
	var errs []error
	switch c.Driver {
	case DriverPostgres:
		if c.DSN == "" {
			errs = append(errs, errors.New("store.dsn: required when driver is postgres"))
		} else if _, err := pgxpool.ParseConfig(c.DSN); err != nil {
			errs = append(errs, errors.New("store.dsn: not a valid PostgreSQL URL or keyword/value connection string"))
		}
		if c.MaxConns < 1 {
			errs = append(errs, fmt.Errorf("store.max_conns: must be at least 1, got %d", c.MaxConns))
		}
	case DriverSQLite:
		if c.Path == "" {
			errs = append(errs, errors.New("store.path: required when driver is sqlite"))
		}
		if c.BusyTimeout < 0 {
			errs = append(errs, fmt.Errorf("store.busy_timeout: must not be negative, got %s", c.BusyTimeout))
		}
	case "":
		errs = append(errs, errors.New(`store.driver: required, "postgres" or "sqlite"`))
	default:
		errs = append(errs, fmt.Errorf(`store.driver: must be "postgres" or "sqlite", got %q`, c.Driver))
	}
	return errs
}

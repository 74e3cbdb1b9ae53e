package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/golang-migrate/migrate/v4"
	migratedb "github.com/golang-migrate/migrate/v4/database"
	migratepgx "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	migratesqlite "github.com/golang-migrate/migrate/v4/database/sqlite"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"go.uber.org/zap"

	"github.com/closedloop/closedloop/migrations"
)

// Store is closedloop's persistence: identities, the conversion outbox and the counts the
// reconciliation report reads, on PostgreSQL or SQLite behind one API. It is safe for
// concurrent use. Every multi-row write is one transaction.
type Store struct {
	cfg  Config
	log  *zap.Logger
	db   database
	pg   bool
	pool *pgxpool.Pool // postgres only
	now  func() time.Time
}

// Open connects to the database cfg names and, when cfg.MigrateOnStart, migrates it up.
// cfg must pass Validate. The caller closes the store.
func Open(ctx context.Context, cfg Config, log *zap.Logger) (*Store, error) {
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("store: %w", errors.Join(errs...))
	}
	if log == nil {
		log = zap.NewNop()
	}
	s := &Store{cfg: cfg, log: log.Named("store"), now: time.Now}
	switch cfg.Driver {
	case DriverPostgres:
		pc, err := pgxpool.ParseConfig(cfg.DSN)
		if err != nil {
			return nil, errors.New("store: dsn is not a valid PostgreSQL connection string")
		}
		pc.MaxConns = int32(cfg.MaxConns)
		// Plan every statement for its actual arguments and the tables' current size. pgx
		// prepares statements, and after five runs PostgreSQL may switch to a generic plan
		// frozen at the size the tables had then: a `key = ANY($1)` lookup planned while
		// a table was nearly empty stays a sequential scan as it grows, so each batch's
		// lookups cost table rows × keys (it cut the consumer from ~6,000 to ~1,500 stage
		// changes/s within 100,000 messages). A DSN that sets plan_cache_mode keeps its own.
		if _, ok := pc.ConnConfig.RuntimeParams["plan_cache_mode"]; !ok {
			pc.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_custom_plan"
		}
		pool, err := pgxpool.NewWithConfig(ctx, pc)
		if err != nil {
			return nil, fmt.Errorf("store: connect to postgres: %w", err)
		}
		if err := pool.Ping(ctx); err != nil {
			pool.Close()
			return nil, fmt.Errorf("store: connect to postgres: %w", err)
		}
		s.pg, s.pool, s.db = true, pool, pgDB{pool}
	case DriverSQLite:
		db, err := openSQLite(cfg)
		if err != nil {
			return nil, err
		}
		if err := db.PingContext(ctx); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("store: open sqlite %s: %w", cfg.Path, err)
		}
		s.db = sqlDB{db}
	}
	if cfg.MigrateOnStart {
		if err := s.Migrate(ctx, "up"); err != nil {
			_ = s.Close()
			return nil, err
		}
	}
	return s, nil
}

// openSQLite opens cfg.Path in WAL mode with a busy timeout and immediate write
// transactions, limited to one connection: SQLite has one writer, and one connection makes
// every transaction in this process serial without SQLITE_BUSY between them.
func openSQLite(cfg Config) (*sql.DB, error) {
	if dir := filepath.Dir(cfg.Path); dir != "." {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("store: sqlite directory: %w", err)
		}
	}
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", cfg.BusyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+cfg.Path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("store: open sqlite %s: %w", cfg.Path, err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	return db, nil
}

// Close releases the database. The store must not be used afterwards.
func (s *Store) Close() error { return s.db.close() }

// Dialect is DriverPostgres or DriverSQLite.
func (s *Store) Dialect() string { return s.cfg.Driver }

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.db.ping(ctx) }

// Migrate runs every migration up, or every migration down (dropping all of closedloop's
// tables), with golang-migrate from the embedded SQL of the store's dialect. Nothing to do
// is success. On PostgreSQL concurrent callers are serialized by golang-migrate's advisory
// lock.
func (s *Store) Migrate(ctx context.Context, direction string) error {
	if direction != "up" && direction != "down" {
		return fmt.Errorf("store: migrate direction must be up or down, got %q", direction)
	}
	m, done, err := s.migrator(ctx)
	if err != nil {
		return err
	}
	defer done()
	// golang-migrate stops between migrations when GracefulStop is signalled.
	stop := context.AfterFunc(ctx, func() {
		select {
		case m.GracefulStop <- true:
		default:
		}
	})
	defer stop()
	if direction == "up" {
		err = m.Up()
	} else {
		err = m.Down()
	}
	if err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return fmt.Errorf("store: migrate %s: %w", direction, err)
	}
	v, dirty, _ := s.MigrationVersion(ctx)
	s.log.Info("migrated", zap.String("direction", direction), zap.Uint("version", v), zap.Bool("dirty", dirty))
	return nil
}

// MigrationVersion is the schema version applied (0 when none) and whether a migration
// failed halfway (dirty: repair the schema by hand, then force the version with the
// golang-migrate CLI). It reads golang-migrate's schema_migrations table on the store's own
// connections, so readiness checks may call it often.
func (s *Store) MigrationVersion(ctx context.Context) (version uint, dirty bool, err error) {
	exists := `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`
	if s.pg {
		exists = `SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema() AND tablename = 'schema_migrations'`
	}
	r, err := s.db.query(ctx, exists)
	if err != nil {
		return 0, false, fmt.Errorf("store: migration version: %w", err)
	}
	n, err := collect(r, func(r rows) (int, error) { var n int; return n, r.Scan(intScan{&n}) })
	if err != nil {
		return 0, false, fmt.Errorf("store: migration version: %w", err)
	}
	if len(n) == 0 || n[0] == 0 {
		return 0, false, nil
	}
	r, err = s.db.query(ctx, `SELECT version, dirty FROM schema_migrations LIMIT 1`)
	if err != nil {
		return 0, false, fmt.Errorf("store: migration version: %w", err)
	}
	type vd struct {
		v     int
		dirty bool
	}
	got, err := collect(r, func(r rows) (vd, error) { var x vd; return x, r.Scan(intScan{&x.v}, boolScan{&x.dirty}) })
	if err != nil {
		return 0, false, fmt.Errorf("store: migration version: %w", err)
	}
	if len(got) == 0 {
		return 0, false, nil
	}
	return uint(max(got[0].v, 0)), got[0].dirty, nil
}

// migrator builds a golang-migrate instance on a connection of its own (golang-migrate
// closes the connection it is given); done releases it.
func (s *Store) migrator(ctx context.Context) (*migrate.Migrate, func(), error) {
	var (
		files  fs.FS
		dir    string
		db     *sql.DB
		driver migratedb.Driver
		err    error
	)
	if s.pg {
		files, dir = migrations.Postgres, "postgres"
		db = stdlib.OpenDB(*s.pool.Config().ConnConfig)
		if err = db.PingContext(ctx); err == nil {
			driver, err = migratepgx.WithInstance(db, &migratepgx.Config{})
		}
	} else {
		files, dir = migrations.SQLite, "sqlite"
		db, err = openSQLite(s.cfg)
		if err == nil {
			driver, err = migratesqlite.WithInstance(db, &migratesqlite.Config{})
		}
	}
	if err != nil {
		if db != nil {
			_ = db.Close()
		}
		return nil, nil, fmt.Errorf("store: migrations: %w", err)
	}
	src, err := iofs.New(files, dir)
	if err != nil {
		_ = driver.Close()
		return nil, nil, fmt.Errorf("store: migrations: %w", err)
	}
	m, err := migrate.NewWithInstance("iofs", src, s.cfg.Driver, driver)
	if err != nil {
		_ = driver.Close()
		return nil, nil, fmt.Errorf("store: migrations: %w", err)
	}
	return m, func() { _, _ = m.Close() }, nil
}

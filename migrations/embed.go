// Package migrations holds closedloop's database schema as SQL files per dialect, embedded in
// the binary and run by golang-migrate (store.Store.Migrate, `closedloop migrate`).
//
// Each dialect directory holds numbered pairs NNNNNN_name.up.sql / NNNNNN_name.down.sql. The
// two dialects describe the same tables and columns; only the types differ (PostgreSQL:
// timestamptz, jsonb, boolean; SQLite: INTEGER microseconds since the Unix epoch in UTC,
// JSON text, INTEGER 0/1). A schema change adds a new pair to both directories in the same
// commit, and the store's conformance suite (store/storetest) migrates up, down and up again.
package migrations

import "embed"

// Postgres holds the PostgreSQL migrations under the directory "postgres".
//
//go:embed postgres/*.sql
var Postgres embed.FS

// SQLite holds the SQLite migrations under the directory "sqlite".
//
//go:embed sqlite/*.sql
var SQLite embed.FS

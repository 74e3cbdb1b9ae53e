// Package store owns closedloop's persistent state: merged identities (hashed identifiers,
// clicks, consent), the conversion outbox with its state machine and leases, and the counts
// the reconciliation report and status page read. One concrete type, *Store, serves both
// dialects:
//
//   - PostgreSQL 12 or later (pgx/v5, pgxpool): the production store. Many worker instances may share
//     it: claims use FOR UPDATE SKIP LOCKED, identity merges lock their subjects with
//     transaction-scoped advisory locks, bulk writes are single statements over unnest
//     arrays.
//   - SQLite (modernc.org/sqlite, pure Go): the embedded store for one worker instance and
//     the demo. WAL mode, a busy timeout, and one connection, so every transaction of the
//     process runs in turn. Two worker processes on one SQLite file are not supported.
//
// The schema lives in package migrations, one SQL directory per dialect, applied by
// golang-migrate (Open migrates up unless Config.MigrateOnStart is false; `closedloop
// migrate` runs it by hand). Both dialects keep times in UTC to the microsecond.
//
// Callers declare the few methods they use as their own small interface (uploader.Outbox,
// report.Source); store/storetest holds the one conformance suite both dialects pass.
//
// Raw emails and phones never reach this package: identities and snapshots hold SHA-256
// hashes only (pii.Set), and error messages name fields, never values.
//
// Sketch:
//
//	st, err := store.Open(ctx, cfg.Store, log)
//	defer st.Close()
//	res, err := st.WriteBatch(ctx, store.Batch{Identities: caps, Conversions: convs, StageCounts: counts})
//	rows, err := st.ClaimDue(ctx, store.Claim{Destination: "google", Owner: id, Limit: 500, LeaseFor: time.Minute})
//	err = st.RecordOutcomes(ctx, id, outcomes, time.Now())
package store

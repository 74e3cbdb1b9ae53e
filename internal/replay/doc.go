// Package replay owns analysts' backfills: replaying a time range of a stage-change topic,
// or a CRM export file (CSV or JSON lines, see EXPORT.md), through the live consumer's
// pipeline (consumer.Pipeline: decode → map → join → outbox) so that conversion keys make
// every replay idempotent. It never joins or commits to the live consumer group, writes
// only conversions (marked Replay, which the uploader caps), and reports what it did in a
// Summary: messages read, decoded and matched; conversions new, already existing (skipped
// by key) and awaiting identity, per destination and rule; and, per destination, how many
// of the new rows the platform's window will expire before anything is sent.
//
// It depends on consumer (Pipeline, Config), crm (decoding), internal/pii (hashing raw
// email and phone from exports on arrival), store (through the small Store interface
// declared here) and uploader.Platform (Check, for the expiry forecast).
//
// Sketch:
//
//	Kafka: per partition, offsets at From..To (by timestamp) ─► batches ─► Pipeline.Process
//	File:  CSV/JSONL lines ─► canonical stage changes (hashed) ─► batches ─► Pipeline.Process
//	Pipeline.Process ─► recorder (ExistingKeys, then WriteBatch of the new rows only; in a
//	dry run nothing is written) ─► Summary
//
// Cancelling ctx stops a replay cleanly: the batch in hand is finished, and the Summary
// says how far each partition got. Running the same replay again is always safe.
package replay

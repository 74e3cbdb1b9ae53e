// Package consumer owns closedloop's Kafka side: the consumer-group readers for stage
// changes and identity captures, the offset handling (fetch, durable store write, then
// commit), the dead-letter producer, the sweeper that gives up on conversions that never
// got an identifier, and the replay reader for backfills.
//
// It depends on crm (decoding and the stage mapping), internal/identity (decoding
// captures), internal/join (the identity join) and the store through small interfaces
// declared here (StageStore, IdentityStore, ...). It never reaches an ad platform.
//
// Sketch:
//
//	stage topics ──FetchMessage──► batch (batch_size or batch_wait)
//	    ─► Pipeline.Process: decode ─► Plan ─► one LookupIdentities ─► join ─► rows
//	    ─► dead letters (sync, acks=all) ─► one WriteBatch ─► CommitMessages
//	  (the group consumer overlaps batches: while batch N is written, N+1 is fetched,
//	  decoded and joined — joined again if N stored an identity it looked up — and N-1's
//	  commit runs; writes and commits stay one at a time, in fetch order)
//	identity topic ─► decode ─► UpsertIdentities ─► AwaitingForSubjects ─► join ─► UpdateAwaiting ─► commit
//	sweeper ─► ExpireAwaiting(now - awaiting_timeout)
//	replay ─► per-partition readers over a time range ─► the same Pipeline (replay rows, no DLQ)
//
// Guarantees: an offset is committed only after every message up to it is either in the
// store or on the dead-letter topic; a failure there stops the consumer from advancing.
// Every step is idempotent on redelivery (the store ignores known conversion keys).
package consumer

// Package join resolves what is known about the people behind a conversion: it merges the
// stored identities of every subject a stage change names (the object and its contacts) into
// the one snapshot an upload is built from, as of the conversion time.
//
// It is pure (no I/O, no clock) and shared by the consumer, which joins conversions as they
// are planned and again when identities arrive later, and by `closedloop mappings explain`.
//
// Merge folds identity captures held in memory into per-subject identities by the store's
// merge rules; Resolve merges several subjects' identities as of a conversion time; Usable
// says whether a snapshot has anything a platform can match on.
//
// Depends on store (Identity, Click) and internal/pii (Set).
package join

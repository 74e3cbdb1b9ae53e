// Package uploader owns the way out of the outbox: per destination, a Dispatcher claims due
// conversions from the store under a lease, checks each against its platform's rules, packs
// the rest into full batches, waits on the destination's rate limiter, sends them with a
// small number of in-process retries, and records one typed outcome per row in the same
// store transaction that releases the lease.
//
// Depends on: the store (through the small Outbox interface declared here), a Platform
// implementation per destination (uploader/google, uploader/meta, uploader/tiktok) that
// knows the request and response formats, go-retryablehttp for the HTTP round trips,
// x/time/rate for the rate limit, zap for logs and Prometheus for metrics.
//
// Sketch of one dispatch cycle:
//
//	ClaimDue(limit = batch, replay ≤ ReplayShare) ─► Platform.Check ─► expired / skipped / rejected
//	                                              └─► batch ─► rate limiter ─► BuildRequest ─► HTTP (retries)
//	                                                        ─► ParseResponse ─► accepted / sent / rejected /
//	                                                           ready + persisted backoff / failed
//	whole batch rejected without naming rows ─► split in halves, resend, until the bad rows are alone
//	setup problem (401/403, *SetupError)     ─► rows back unchanged, destination paused, probe later
//	RecordOutcomes(owner, outcomes) ─► one transaction, leases released
//
// Alongside, the same Run sweeps expired leases (rows of a crashed worker return to ready)
// and, for platforms that accept asynchronously (StatusPoller), polls rows in state sent.
//
// Memory is bounded by the batch size, never by the backlog. Shutdown is bounded: on context
// cancellation the in-flight request is abandoned, its rows are handed back unchanged on a
// short detached deadline, and any lease that could not be released expires on its own.
package uploader

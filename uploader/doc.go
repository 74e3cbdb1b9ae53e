// Package uploader owns the way out of the outbox: per destination, a Dispatcher claims due
// conversions from the store under a lease, checks each against its platform's rules, packs
// the rest into full batches, waits on the destination's rate limiter, sends them with a
// small number of in-process retries, and records one typed outcome per row in the same
// store transaction that releases the lease.
//
// Depends on: the store (through the small Outbox interface declared here), a Platform per
// destination built from its platform package's Spec (uploader/platforms is the registry),
// go-retryablehttp for the HTTP round trips, x/time/rate for the rate limit, zap for logs
// and Prometheus for metrics.
//
// Sketch of one dispatch cycle:
//
//	ClaimDue(limit = batch, replay ≤ ReplayShare) ─► Platform.Check ─► expired / skipped / rejected
//	                                              └─► batch ─► rate limiter ─► BuildRequest ─► HTTP (retries)
//	                                                        ─► ParseResponse ─► *Error / per-row classes
//	                                                        ─► outcome(class) ─► row state
//	RecordOutcomes(owner, outcomes) ─► one transaction, leases released
//
// Outcome rules (one *Error type; outcome is the one place a class becomes a state):
//
//   - Only a documented per-row validation error (ClassPermanent) rejects a row. An answer
//     the platform package does not recognise is ClassUnknown: retried with backoff,
//     counted in closedloop_upload_unrecognised_total, logged at warn once per reason, and
//     after max_attempts the row ends failed (re-drivable), never rejected.
//   - A batch rejected without naming rows is bisected until the bad rows stand alone; when
//     every row then stands alone rejected for the same reason, the request was at fault:
//     the rows are retried (as unknown), none is rejected.
//   - Setup is scoped: an answer about the row's conversion action (unknown, disabled,
//     wrong type) is ClassHeld and holds only that action's rows (state held, resent at the
//     hold probe every PauseMax, retargeted at once when a mapping change fixes the action;
//     shown in Status, the report, the status page and closedloop_conversion_actions_held);
//     credentials and account problems (ClassSetup) pause the whole destination.
//   - A 401 the platform's token refresh fixes comes back Refreshed: resent once at once
//     with a fresh token, no pause, no error log. Only a 401 on a fresh token is setup.
//   - A response the HTTP client would retry (429, 5xx) is read and classified first: a
//     setup error inside a 5xx is not retried in process.
//   - A batch that failed together gets one backoff, so it is sent together again.
//   - Asynchronous partial success (a status that counts failed rows without naming them)
//     ends the rows partial with "N of M failed per the platform: reason=count", never
//     accepted.
//
// Adding a platform: a new package under uploader/ exporting a Spec (and implementing
// Platform) with its identifier rules (Spec.Hashes) and its sandbox emulation (Spec.Sandbox,
// mounted by uploader/platforms.NewSandbox), its TestConformance running
// uploader/platformtest, one line in uploader/platforms.All, its request schema facts
// (testdata/schemas and uploader/sandbox/schema/facts), docs and the example config.
// Nothing else names a platform.
//
// Alongside, the same Run sweeps expired leases (rows of a crashed worker return to ready)
// and held rows due for their probe, and, for platforms that accept asynchronously
// (StatusPoller), polls rows in state sent.
//
// Memory is bounded by the batch size, never by the backlog. Shutdown is bounded: on context
// cancellation the in-flight request is abandoned, its rows are handed back unchanged on a
// short detached deadline, and any lease that could not be released expires on its own.
package uploader

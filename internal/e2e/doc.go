// Package e2e holds closedloop's end-to-end proof (test files only): the real worker
// (internal/worker) on a real Apache Kafka broker and a real PostgreSQL database, uploading
// to the platform sandbox while the sandbox injects faults. It owns no production code.
//
// The proof (issue 5): 5,000 canonical stage changes flow through consumer, join, outbox and
// the Google Data Manager, Meta and TikTok dispatchers while the sandbox answers 20% of the
// upload requests with 5xx, 10% with 429 + Retry-After, holds some answers past the client's
// timeout, rejects a known set of rows and, once mid-run, refuses every access token. At the
// end every valid conversion took effect exactly once per dedup key in the sandbox's counts,
// every invalid one is rejected with the sandbox's reason, nothing is left in flight or
// leased, and every destination paused for the token failure and resumed after it.
//
// The enrichment proof (issue 14, TestThinWebhooksEnrichedUnderFaults): native HubSpot deal
// webhooks without amount or contacts, Pipedrive and Close stage changes without contact data,
// enriched from the CRM emulator (internal/crmsandbox) while it injects 429s, 5xx and a window
// of 401s, the worker stopped and restarted mid-run. Every conversion ends accepted once with
// the deal's value and its contact's hashed email (as the platform saw it, through a recording
// proxy), and the emulator's counters show a second stage change fetches nothing.
//
// Run it alone with `scripts/with-services.sh go test -race -count=1 ./internal/e2e/`;
// `make test` runs it with everything else.
package e2e

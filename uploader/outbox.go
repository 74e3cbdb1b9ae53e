package uploader

import (
	"context"
	"time"

	"github.com/closedloop/closedloop/store"
)

// Outbox is what the dispatcher needs from the store. *store.Store implements it for
// Postgres and SQLite; every method must be safe for concurrent use.
type Outbox interface {
	// ClaimDue leases up to c.Limit rows of c.Destination that are ready and due at c.Now
	// (at most c.ReplayLimit of them replay rows) to c.Owner until c.Now+c.LeaseFor, and
	// returns them in state in_flight.
	ClaimDue(ctx context.Context, c store.Claim) ([]store.Conversion, error)
	// RecordOutcomes applies outs to rows leased by owner in one transaction and releases
	// their leases.
	RecordOutcomes(ctx context.Context, owner string, outs []store.Outcome, now time.Time) error
	// ReleaseExpiredLeases returns rows whose lease ended before now to ready, unchanged.
	ReleaseExpiredLeases(ctx context.Context, now time.Time) (int, error)
	// ReleaseHeld returns held rows whose hold probe is due at now to ready.
	ReleaseHeld(ctx context.Context, now time.Time) (int, error)
	// SentForPolling returns up to limit rows of destination in state sent (with a
	// PlatformRef), oldest first.
	SentForPolling(ctx context.Context, destination string, limit int) ([]store.Conversion, error)
}

package uploader

import (
	"context"
	"net/http"
	"time"

	"github.com/closedloop/closedloop/store"
)

// Platform is what the dispatcher needs from one ad platform's API. Each platform package
// (uploader/google, uploader/meta, uploader/tiktok) implements it; the dispatcher owns
// claiming, batching, rate limiting, retries, bisecting and recording.
type Platform interface {
	// MaxBatch is the most rows one request may carry.
	MaxBatch() int
	// Check validates one row against the platform's rules before anything is sent
	// (age window on the platform's clock, required identifiers, consent, formats). It
	// returns nil when the row can be sent, else a *Error whose Class is ClassExpired,
	// ClassSkipped or ClassPermanent.
	Check(c *store.Conversion, now time.Time) *Error
	// BuildRequest makes the exact HTTP request for a batch of rows that passed Check.
	// The request's body must be replayable (GetBody set, as http.NewRequest does for
	// bytes.Reader). Auth headers are set here; a failure to get credentials is a *SetupError.
	BuildRequest(ctx context.Context, batch []store.Conversion, now time.Time) (*http.Request, error)
	// ParseResponse classifies a response. It returns one RowResult per batch row (same
	// order) when the platform answered per row, or an error for the whole batch:
	// *SetupError (pause the destination), *TransientError (retry later) or
	// *BatchRejectedError (the platform rejected the batch without naming rows: bisect).
	ParseResponse(resp *http.Response, body []byte, batch []store.Conversion) ([]RowResult, error)
}

// StatusPoller is implemented by platforms that accept asynchronously (Google Data Manager):
// the dispatcher calls it for rows in state sent, and records the outcomes it returns.
type StatusPoller interface {
	// PollRequest builds the status request for one platform reference (e.g. requestId).
	PollRequest(ctx context.Context, ref string) (*http.Request, error)
	// ParsePoll turns the status response into outcomes for the rows sent under ref.
	// done=false means the platform is still processing; ask again later.
	ParsePoll(resp *http.Response, body []byte, rows []store.Conversion) (results []RowResult, done bool, err error)
}

// Grouper is implemented by platforms whose rows go to different endpoints (the Google Ads
// API sends conversions to uploadClickConversions and retractions to
// uploadConversionAdjustments). The dispatcher puts only rows with equal BatchGroup in one
// batch; BuildRequest rejects a mixed batch with an error.
type Grouper interface {
	BatchGroup(c *store.Conversion) string
}

package uploader

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"
)

// Options tunes a Dispatcher beyond its DestinationConfig. The zero value gives the
// production defaults noted on each field; tests shorten the intervals.
type Options struct {
	// Owner names this process in leases. Default: ProcessOwner().
	Owner string
	// LeaseFor is how long a claim holds its rows. It must cover a whole batch including
	// bisecting and retries; a lease that runs out returns the rows to ready. Default 2m.
	LeaseFor time.Duration
	// PollInterval is the wait after a claim that did not fill a batch. Default 1s.
	PollInterval time.Duration

	// PauseMin and PauseMax bound the wait between probes of a paused destination; the wait
	// doubles after every failed probe. Defaults 5s and 5m.
	PauseMin, PauseMax time.Duration

	// RetryMax is the number of in-process HTTP retries of one request (5xx, 429, network
	// errors). Default 2; negative means none.
	RetryMax int
	// RetryWaitMin and RetryWaitMax bound the in-process wait between those retries. A
	// Retry-After longer than RetryWaitMax is not waited for in process: the rows go back to
	// ready with NextAttemptAt honouring it. Defaults 500ms and 10s.
	RetryWaitMin, RetryWaitMax time.Duration

	// BackoffBase and BackoffMax shape the persisted backoff of a row after a transient
	// failure: attempt n waits a random duration in [d/2, d] with d = BackoffBase·2^(n-1)
	// capped at BackoffMax. Defaults 30s and 1h.
	BackoffBase, BackoffMax time.Duration

	// LeaseSweepInterval is how often expired leases are released. Default 30s.
	LeaseSweepInterval time.Duration
	// StatusPollInterval is how often rows in state sent are polled (StatusPoller
	// platforms only). Default 30s. StatusPollLimit caps the rows read per poll. Default 1000.
	StatusPollInterval time.Duration
	StatusPollLimit    int

	// AdjustmentWait is how long an adjustment (retraction, restatement) waits before it
	// is looked at again when the conversion it adjusts, or an earlier adjustment of it,
	// is not through yet. Default 1m.
	AdjustmentWait time.Duration

	// ShutdownTimeout bounds the detached write that hands rows back after the context was
	// cancelled. Default 5s.
	ShutdownTimeout time.Duration

	// Transport is the base HTTP transport. Default: a pooled transport of its own.
	Transport http.RoundTripper
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.Owner == "" {
		o.Owner = ProcessOwner()
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.LeaseFor, 2*time.Minute)
	def(&o.PollInterval, time.Second)
	def(&o.AdjustmentWait, time.Minute)
	def(&o.PauseMin, 5*time.Second)
	def(&o.PauseMax, 5*time.Minute)
	if o.PauseMax < o.PauseMin {
		o.PauseMax = o.PauseMin
	}
	switch {
	case o.RetryMax == 0:
		o.RetryMax = 2
	case o.RetryMax < 0:
		o.RetryMax = 0
	}
	def(&o.RetryWaitMin, 500*time.Millisecond)
	def(&o.RetryWaitMax, 10*time.Second)
	if o.RetryWaitMax < o.RetryWaitMin {
		o.RetryWaitMax = o.RetryWaitMin
	}
	def(&o.BackoffBase, 30*time.Second)
	def(&o.BackoffMax, time.Hour)
	if o.BackoffMax < o.BackoffBase {
		o.BackoffMax = o.BackoffBase
	}
	def(&o.LeaseSweepInterval, 30*time.Second)
	def(&o.StatusPollInterval, 30*time.Second)
	if o.StatusPollLimit <= 0 {
		o.StatusPollLimit = 1000
	}
	def(&o.ShutdownTimeout, 5*time.Second)
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// ProcessOwner returns this process's lease owner id: host name, process id and a random
// suffix, so that a restarted process never mistakes an old lease for its own. It is the
// same for every call in one process.
func ProcessOwner() string { return processOwner() }

var processOwner = sync.OnceValue(func() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
})

package uploader

import (
	"context"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// RateTaker is implemented by outboxes that keep a destination's token bucket where every
// worker sees it (*store.Store: one bucket per destination in the database), so that
// rate_per_second is a cluster-wide quota, not one per instance.
type RateTaker interface {
	// TakeRate takes one request from destination's bucket and returns how long to wait
	// before sending it.
	TakeRate(ctx context.Context, destination string, perSecond float64, burst int, now time.Time) (time.Duration, error)
}

// waiter is what the dispatcher waits on before every request and retry.
type waiter interface {
	Wait(ctx context.Context) error
}

// sharedLimiter waits on the shared bucket; when the store cannot be asked it falls back to
// the process's own limiter (the quota then holds per instance) and says so once.
type sharedLimiter struct {
	dest      string
	perSecond float64
	burst     int
	taker     RateTaker
	local     *rate.Limiter
	now       func() time.Time
	log       *zap.Logger
	warned    atomic.Bool // safe for the dispatch and poll loops at once
}

func (l *sharedLimiter) Wait(ctx context.Context) error {
	wait, err := l.taker.TakeRate(ctx, l.dest, l.perSecond, l.burst, l.now())
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !l.warned.Swap(true) {
			l.log.Warn("the shared rate limit could not be read; limiting this process alone until it can",
				zap.String("error", errText(err)))
		}
		return l.local.Wait(ctx)
	}
	l.warned.Store(false)
	if wait <= 0 {
		return nil
	}
	if !sleep(ctx, wait) {
		return ctx.Err()
	}
	return nil
}

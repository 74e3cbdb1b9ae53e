package consumer

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/closedloop/closedloop/store"
)

// backoff says how durable steps (dead-letter writes, store writes) are retried before the
// consumer gives up and stops advancing. Nothing is committed while a step retries.
type backoff struct {
	Attempts int           // total tries, at least 1
	Min, Max time.Duration // first wait and cap; each wait doubles
}

var defaultBackoff = backoff{Attempts: 6, Min: 100 * time.Millisecond, Max: 5 * time.Second}

// do runs step until it succeeds, ctx ends, or Attempts are used up; it returns the last
// error. Waits select on ctx and a timer.
func (b backoff) do(ctx context.Context, log *zap.Logger, what string, step func(context.Context) error) error {
	wait := b.Min
	attempts := max(b.Attempts, 1)
	var err error
	for i := 1; ; i++ {
		if err = step(ctx); err == nil {
			return nil
		}
		if ctx.Err() != nil || errors.Is(err, context.Canceled) || permanent(err) {
			return err
		}
		if i >= attempts {
			return err
		}
		log.Warn("retrying", zap.String("step", what), zap.Int("attempt", i), zap.Duration("wait", wait), zap.Error(err))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(wait*2, b.Max)
	}
}

// permanent reports errors no retry can fix: the store refusing a row as invalid.
func permanent(err error) bool {
	var inv *store.InvalidError
	return errors.As(err, &inv)
}

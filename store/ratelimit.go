package store

import (
	"context"
	"fmt"
	"time"
)

// TakeRate takes one request from destination's token bucket, shared by every process on
// this database: perSecond tokens a second, at most burst banked. It returns how long the
// caller must wait before sending (0 when a token was there). Takers queue: a take that
// finds the bucket empty reserves the next token, so N concurrent takers across instances
// wait 1/perSecond apart and the rate holds cluster-wide. now is the caller's clock; a
// clock behind the bucket's last update refills nothing.
func (s *Store) TakeRate(ctx context.Context, destination string, perSecond float64, burst int, now time.Time) (time.Duration, error) {
	if perSecond <= 0 {
		return 0, nil
	}
	if burst < 1 {
		burst = 1
	}
	nowUS := now.UnixMicro()
	var wait time.Duration
	err := s.db.inTx(ctx, func(q querier) error {
		if _, err := q.exec(ctx, `INSERT INTO rate_buckets (destination, tokens, updated_us) VALUES ($1, $2, $3)
			ON CONFLICT (destination) DO NOTHING`, destination, float64(burst), nowUS); err != nil {
			return err
		}
		lock := ""
		if s.pg {
			lock = " FOR UPDATE"
		}
		r, err := q.query(ctx, `SELECT tokens, updated_us FROM rate_buckets WHERE destination = $1`+lock, destination)
		if err != nil {
			return err
		}
		type bucket struct {
			tokens float64
			at     int64
		}
		got, err := collect(r, func(r rows) (bucket, error) {
			var b bucket
			return b, r.Scan(&b.tokens, &b.at)
		})
		if err != nil {
			return err
		}
		if len(got) != 1 {
			return fmt.Errorf("bucket %s: %d rows", destination, len(got))
		}
		b := got[0]
		at := max(b.at, nowUS)
		tokens := min(float64(burst), b.tokens+float64(at-b.at)/1e6*perSecond) - 1
		if tokens < 0 {
			wait = time.Duration(-tokens / perSecond * float64(time.Second))
		}
		_, err = q.exec(ctx, `UPDATE rate_buckets SET tokens = $2, updated_us = $3 WHERE destination = $1`, destination, tokens, at)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: take rate of %s: %w", destination, err)
	}
	return wait, nil
}

package uploader

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/closedloop/closedloop/store"
)

// sweepLoop returns rows whose lease ran out (a crashed or stuck worker) to ready.
func (d *Dispatcher) sweepLoop(ctx context.Context) error {
	t := time.NewTicker(d.o.LeaseSweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		n, err := d.out.ReleaseExpiredLeases(ctx, d.o.Now())
		switch {
		case err != nil && ctx.Err() == nil:
			d.log.Error("releasing expired leases failed", zap.String("error", errText(err)))
		case n > 0:
			d.log.Info("released expired leases", zap.Int("rows", n))
		}
		n, err = d.out.ReleaseHeld(ctx, d.o.Now())
		switch {
		case err != nil && ctx.Err() == nil:
			d.log.Error("releasing held rows for their probe failed", zap.String("error", errText(err)))
		case n > 0:
			d.log.Info("held rows due for their probe", zap.Int("rows", n))
		}
	}
}

// pollLoop asks the platform about rows in state sent, every StatusPollInterval.
func (d *Dispatcher) pollLoop(ctx context.Context) error {
	t := time.NewTicker(d.o.StatusPollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := d.pollOnce(ctx); err != nil && ctx.Err() == nil {
			d.log.Error("status poll failed", zap.String("error", errText(err)))
		}
	}
}

// pollOnce polls every platform reference among the oldest sent rows once and records the
// rows the platform has finished with. Rows still processing stay sent.
func (d *Dispatcher) pollOnce(ctx context.Context) error {
	rows, err := d.out.SentForPolling(ctx, d.name, d.o.StatusPollLimit)
	if err != nil {
		return fmt.Errorf("read sent rows: %w", err)
	}
	var refs []string
	byRef := map[string][]store.Conversion{}
	for _, c := range rows {
		if c.PlatformRef == "" {
			continue
		}
		if _, ok := byRef[c.PlatformRef]; !ok {
			refs = append(refs, c.PlatformRef)
		}
		byRef[c.PlatformRef] = append(byRef[c.PlatformRef], c)
	}
	for _, ref := range refs {
		if ctx.Err() != nil {
			return nil
		}
		rs := byRef[ref]
		results, done, err := d.poll(ctx, ref, rs)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			d.log.Warn("status poll of one request failed; asking again later",
				zap.String("platform_ref", ref), zap.String("error", errText(err)))
			continue
		}
		if !done {
			continue
		}
		now := d.o.Now()
		outs := make([]store.Outcome, 0, len(rs))
		for i, r := range results {
			switch r.Class {
			case ClassSent:
				continue // still processing
			case ClassSetup:
				d.log.Error("status poll reports a setup problem for a sent row; it stays sent",
					zap.String("platform_ref", ref), zap.String("reason", r.Reason), zap.String("detail", redact(r.Detail)))
				continue
			case ClassTransient:
				// The platform failed to process it: send again (its dedup key makes that
				// safe). The attempt was counted when the row was sent.
				outs = append(outs, d.retryOutcome(&rs[i], r.Reason, r.Detail, r.RetryAfter, now, false))
				continue
			}
			o := d.outcome(&rs[i], r.Class, r.Reason, r.Detail, r.RetryAfter, now, false)
			o.CountAttempt = false
			outs = append(outs, o)
		}
		if len(outs) == 0 {
			continue
		}
		if err := d.out.RecordOutcomes(ctx, d.o.Owner, outs, now); err != nil {
			return fmt.Errorf("record poll outcomes for %s: %w", ref, err)
		}
	}
	return nil
}

// poll asks for the status of one platform reference.
func (d *Dispatcher) poll(ctx context.Context, ref string, rows []store.Conversion) ([]RowResult, bool, error) {
	req, err := d.poller.PollRequest(ctx, ref)
	if err != nil {
		return nil, false, err
	}
	resp, body, err := d.do(ctx, req, 0, nil)
	if err != nil {
		return nil, false, err
	}
	results, done, err := d.poller.ParsePoll(resp, body, rows)
	if err != nil {
		return nil, false, err
	}
	if done && len(results) != len(rows) {
		return nil, false, fmt.Errorf("status poll returned %d results for %d rows", len(results), len(rows))
	}
	return results, done, nil
}

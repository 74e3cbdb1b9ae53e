package uploader

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/closedloop/closedloop/store"
)

// AdjustedReader is implemented by an Outbox that can read the conversions adjustments
// name (*store.Store does). With it the dispatcher sends an adjustment (a retraction or a
// restatement) only after the conversion it adjusts was accepted and after every earlier
// adjustment of that conversion ended, in the order they happened, and hands the platform
// the conversion itself (store.Conversion.Adjusted). Without it adjustments are sent as
// claimed, with Adjusted nil.
type AdjustedReader interface {
	// AdjustedConversions returns the conversions with keys and every adjustment of them.
	AdjustedConversions(ctx context.Context, keys []string) ([]store.Conversion, error)
}

// gateAdjustments decides, in one store read, which of the checked rows that are
// adjustments go now: those whose conversion is accepted (or partial) and that no earlier,
// unfinished adjustment of the same conversion precedes get Adjusted set; the others get
// an outcome: ready again after AdjustmentWait (reason awaiting_original) while the
// conversion or an earlier adjustment is on its way, skipped when the conversion is
// missing (original_not_found) or ended unaccepted (original_not_accepted). Rows that are
// not adjustments pass unchanged. The returned batch keeps conversions first, in their
// order, then the adjustments by occurred_at, so a batch applies them in order.
func (d *Dispatcher) gateAdjustments(ctx context.Context, batch []store.Conversion, now time.Time) ([]store.Conversion, []store.Outcome, error) {
	reader, ok := d.out.(AdjustedReader)
	if !ok {
		return batch, nil, nil
	}
	var keys []string
	inBatch := map[string]bool{}
	for i := range batch {
		if store.Adjustment(batch[i].Kind) {
			keys = append(keys, batch[i].RetractsKey)
			inBatch[batch[i].Key] = true
		}
	}
	if len(keys) == 0 {
		return batch, nil, nil
	}
	stored, err := reader.AdjustedConversions(ctx, keys)
	if err != nil {
		return nil, nil, fmt.Errorf("adjusted conversions: %w", err)
	}
	originals := map[string]store.Conversion{}
	siblings := map[string][]store.Conversion{} // conversion key → its adjustments
	for _, c := range stored {
		if store.Adjustment(c.Kind) {
			siblings[c.RetractsKey] = append(siblings[c.RetractsKey], c)
		} else {
			originals[c.Key] = c
		}
	}
	var outs []store.Outcome
	wait := func(c *store.Conversion, detail string) {
		d.m.Rows.WithLabelValues(d.name, store.ReasonAwaitingOriginal).Inc()
		outs = append(outs, store.Outcome{Key: c.Key, State: store.StateReady, Reason: store.ReasonAwaitingOriginal,
			Detail: detail, NextAttemptAt: now.Add(d.o.AdjustmentWait)})
	}
	kept := batch[:0:0]
	for i := range batch {
		c := batch[i]
		if !store.Adjustment(c.Kind) {
			kept = append(kept, c)
			continue
		}
		orig, found := originals[c.RetractsKey]
		switch {
		case !found:
			outs = append(outs, d.outcome(&c, ClassSkipped, store.ReasonOriginalNotFound,
				"no conversion with the key this "+c.Kind+" names (it was never created on this destination)", 0, now, false))
			continue
		case orig.State == store.StateAccepted || orig.State == store.StatePartial:
		case orig.State.Terminal():
			outs = append(outs, d.outcome(&c, ClassSkipped, store.ReasonOriginalNotAccepted,
				fmt.Sprintf("the conversion it adjusts ended %s (%s)", orig.State, orig.Reason), 0, now, false))
			continue
		default:
			wait(&c, fmt.Sprintf("the conversion it adjusts is %s, not accepted yet", orig.State))
			continue
		}
		if earlier := pendingBefore(c, siblings[c.RetractsKey], inBatch); earlier != "" {
			wait(&c, "an earlier adjustment of the same conversion is "+earlier)
			continue
		}
		o := orig
		c.Adjusted = &o
		kept = append(kept, c)
	}
	sort.SliceStable(kept, func(i, j int) bool {
		ai, aj := store.Adjustment(kept[i].Kind), store.Adjustment(kept[j].Kind)
		if ai != aj {
			return aj
		}
		return ai && kept[i].OccurredAt.Before(kept[j].OccurredAt)
	})
	return kept, outs, nil
}

// pendingBefore names the state of an adjustment of the same conversion that happened
// before c and has not ended, unless it is being sent in this batch; "" when none.
func pendingBefore(c store.Conversion, siblings []store.Conversion, inBatch map[string]bool) string {
	for _, s := range siblings {
		if s.Key == c.Key || inBatch[s.Key] || !s.OccurredAt.Before(c.OccurredAt) {
			continue
		}
		if !s.State.Terminal() {
			return string(s.State)
		}
	}
	return ""
}

package uploader

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/store"
)

// TestGateAdjustments: an adjustment goes only once its conversion is accepted and every
// earlier adjustment of it ended or goes in the same batch (then in time order), with the
// conversion attached; it waits while either is on its way, and is skipped, with a reason,
// when the conversion never will be accepted or does not exist.
func TestGateAdjustments(t *testing.T) {
	t.Parallel()
	rows := newRows("c", 3) // c000 accepted, c001 ready, c002 rejected
	rows[0].State, rows[0].Reason = store.StateAccepted, "uploaded"
	rows[2].State, rows[2].Reason = store.StateRejected, "CLICK_NOT_FOUND"
	adj := func(key, kind, of string, at time.Duration) store.Conversion {
		c := newRows(key, 1)[0]
		c.Key, c.Kind, c.RetractsKey, c.OccurredAt = key, kind, of, rows[0].OccurredAt.Add(at)
		return c
	}
	r1 := adj("r1", store.KindRestatement, "c000", time.Minute)
	x1 := adj("x1", store.KindRetraction, "c000", 2*time.Minute)
	rPend := adj("r2", store.KindRestatement, "c001", time.Minute)
	rRej := adj("r3", store.KindRestatement, "c002", time.Minute)
	rGone := adj("r4", store.KindRestatement, "nope", time.Minute)
	out := openStore(t, append(rows, r1, x1, rPend, rRej, rGone)...)
	opts := testOptions()
	opts.AdjustmentWait = 3 * time.Minute
	d := New(testDest, DestinationConfig{Platform: "test"}, &keysPlatform{max: 10}, out, opts, zaptest.NewLogger(t), nil)
	now := time.Now()
	ctx := context.Background()

	conv := newRows("z", 1)[0]
	kept, outs, err := d.gateAdjustments(ctx, []store.Conversion{x1, conv, r1}, now)
	require.NoError(t, err)
	require.Empty(t, outs)
	require.Equal(t, []string{"z000", "r1", "x1"}, keysOf(kept), "conversions first, then adjustments by time")
	require.Nil(t, kept[0].Adjusted)
	require.Equal(t, "c000", kept[1].Adjusted.Key)
	require.Equal(t, store.StateAccepted, kept[2].Adjusted.State)

	kept, outs, err = d.gateAdjustments(ctx, []store.Conversion{x1}, now)
	require.NoError(t, err)
	require.Empty(t, kept, "r1 (ready, not in this batch) happened before x1")
	require.Equal(t, []store.Outcome{{Key: "x1", State: store.StateReady, Reason: store.ReasonAwaitingOriginal,
		Detail: "an earlier adjustment of the same conversion is ready", NextAttemptAt: now.Add(3 * time.Minute)}}, outs)

	kept, outs, err = d.gateAdjustments(ctx, []store.Conversion{rPend, rRej, rGone}, now)
	require.NoError(t, err)
	require.Empty(t, kept)
	require.Len(t, outs, 3)
	require.Equal(t, store.StateReady, outs[0].State)
	require.Equal(t, store.ReasonAwaitingOriginal, outs[0].Reason)
	require.Equal(t, now.Add(3*time.Minute), outs[0].NextAttemptAt)
	require.Equal(t, store.StateSkipped, outs[1].State)
	require.Equal(t, store.ReasonOriginalNotAccepted, outs[1].Reason)
	require.Contains(t, outs[1].Detail, "rejected (CLICK_NOT_FOUND)")
	require.Equal(t, store.StateSkipped, outs[2].State)
	require.Equal(t, store.ReasonOriginalNotFound, outs[2].Reason)
}

func keysOf(cs []store.Conversion) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Key
	}
	return out
}

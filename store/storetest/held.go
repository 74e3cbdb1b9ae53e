package storetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/store"
)

// testHeldRows: a held row (its conversion action refused by the platform) is not claimed
// before its hold probe, is released to ready by it with its attempts and reason kept, and
// a mapping fix points the held rows of its rule and destination at the new conversion.
func testHeldRows(t *testing.T, open Opener) {
	s := open(t)
	a, b, c, other := conv("a"), conv("b"), conv("c"), conv("other")
	other.Rule = "sql"
	write(t, s, a, b, c, other)
	require.Len(t, claim(t, s, store.Claim{Limit: 10, Now: at(1), LeaseFor: time.Hour}), 4)
	outs := []store.Outcome{
		{Key: "a", State: store.StateHeld, Reason: "NO_CONVERSION_ACTION_FOUND", Detail: "not found", NextAttemptAt: at(2)},
		{Key: "b", State: store.StateHeld, Reason: "NO_CONVERSION_ACTION_FOUND", NextAttemptAt: at(5)},
		{Key: "c", State: store.StatePartial, Reason: "1 of 4 failed per the platform: X=1", CountAttempt: true},
		{Key: "other", State: store.StateHeld, Reason: "NO_CONVERSION_ACTION_FOUND", NextAttemptAt: at(5)},
	}
	require.NoError(t, s.RecordOutcomes(ctx(t), "w1", outs, at(1)))
	require.Equal(t, store.StatePartial, get(t, s, "c").State)
	require.True(t, get(t, s, "c").State.Terminal())
	require.False(t, store.StateHeld.Terminal())
	require.Empty(t, claim(t, s, store.Claim{Limit: 10, Now: at(3), LeaseFor: time.Hour}), "held rows are not claimed")

	n, err := s.ReleaseHeld(ctx(t), at(1.5))
	require.NoError(t, err)
	require.Zero(t, n, "not before the probe")
	n, err = s.ReleaseHeld(ctx(t), at(2))
	require.NoError(t, err)
	require.Equal(t, 1, n)
	got := get(t, s, "a")
	require.Equal(t, store.StateReady, got.State)
	require.Equal(t, "NO_CONVERSION_ACTION_FOUND", got.Reason, "the reason stays visible until the next answer")
	require.Zero(t, got.Attempts)

	// Sales ops fix the rule's conversion action: its held rows follow, now.
	n, err = s.RetargetHeld(ctx(t), "won", "google", "customers/1/conversionActions/3", at(3))
	require.NoError(t, err)
	require.Equal(t, 1, n, "b only: a is ready already, other is another rule")
	got = get(t, s, "b")
	require.Equal(t, store.StateReady, got.State)
	require.Equal(t, "customers/1/conversionActions/3", got.ConversionName)
	require.Equal(t, at(3), got.NextAttemptAt)
	require.Equal(t, store.StateHeld, get(t, s, "other").State)
	n, err = s.RetargetHeld(ctx(t), "sql", "google", "customers/1/conversionActions/2", at(3))
	require.NoError(t, err)
	require.Zero(t, n, "same conversion: left to its probe")
}

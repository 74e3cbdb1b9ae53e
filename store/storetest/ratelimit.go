package storetest

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// testRateBucket: the shared token bucket gives burst tokens at once, then queues takers
// 1/rate apart, refills with time up to burst, and under concurrent takers hands out
// distinct slots (no two takers share one).
func testRateBucket(t *testing.T, open Opener) {
	s := open(t)
	take := func(dest string, now time.Time) time.Duration {
		w, err := s.TakeRate(ctx(t), dest, 2, 2, now) // 2/s, burst 2
		require.NoError(t, err)
		return w
	}
	require.Zero(t, take("meta", at(0)))
	require.Zero(t, take("meta", at(0)))
	require.Equal(t, 500*time.Millisecond, take("meta", at(0)), "the bucket is empty: the next slot")
	require.Equal(t, time.Second, take("meta", at(0)), "queued behind the previous taker")
	require.Zero(t, take("google", at(0)), "buckets are per destination")
	require.Zero(t, take("meta", at(0).Add(10*time.Second)), "refilled")
	require.Zero(t, take("meta", at(0).Add(10*time.Second)))
	require.Equal(t, 500*time.Millisecond, take("meta", at(0).Add(10*time.Second)), "refill stops at burst")
	require.Equal(t, time.Second, take("meta", at(0).Add(5*time.Second)), "a clock behind the bucket refills nothing and queues behind it")
	w, err := s.TakeRate(ctx(t), "off", 0, 1, at(0))
	require.NoError(t, err)
	require.Zero(t, w, "no rate: no wait")

	// Concurrent takers (as several instances would be) get distinct slots.
	var mu sync.Mutex
	waits := map[time.Duration]bool{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w, err := s.TakeRate(ctx(t), "tiktok", 10, 1, at(1))
			require.NoError(t, err)
			mu.Lock()
			waits[w.Round(time.Millisecond)] = true
			mu.Unlock()
		}()
	}
	wg.Wait()
	require.Len(t, waits, 8, "eight takers, eight slots 100ms apart: %v", waits)
	for i := range 8 {
		require.True(t, waits[time.Duration(i)*100*time.Millisecond], "slot %d", i)
	}
}

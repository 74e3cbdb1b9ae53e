package main

import (
	"math"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/require"
)

// Not parallel: it changes the process's collector settings (and restores them).
func TestTuneGC(t *testing.T) {
	prevPct, prevLimit := debug.SetGCPercent(100), debug.SetMemoryLimit(math.MaxInt64)
	t.Cleanup(func() { debug.SetGCPercent(prevPct); debug.SetMemoryLimit(prevLimit) })

	tuneGC(func(string) (string, bool) { return "", false })
	require.Equal(t, defaultGOGC, debug.SetGCPercent(100), "GOGC unset: our default")
	require.Equal(t, int64(defaultMemLimit), debug.SetMemoryLimit(math.MaxInt64), "GOMEMLIMIT unset: our default")

	set := map[string]string{"GOGC": "100", "GOMEMLIMIT": "off"}
	tuneGC(func(k string) (string, bool) { v, ok := set[k]; return v, ok })
	require.Equal(t, 100, debug.SetGCPercent(100), "GOGC set: left to the runtime")
	require.Equal(t, int64(math.MaxInt64), debug.SetMemoryLimit(math.MaxInt64), "GOMEMLIMIT set: left to the runtime")
}

package main

import (
	"math"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/require"
)

// Not parallel: it changes the process's collector setting (and restores it).
func TestTuneGC(t *testing.T) {
	prev := debug.SetGCPercent(100)
	prevLimit := debug.SetMemoryLimit(math.MaxInt64)
	t.Cleanup(func() { debug.SetGCPercent(prev); debug.SetMemoryLimit(prevLimit) })

	tuneGC(func(string) (string, bool) { return "", false })
	require.Equal(t, defaultGOGC, debug.SetGCPercent(100), "GOGC unset: our default")
	require.Equal(t, int64(defaultMemoryLimit), debug.SetMemoryLimit(math.MaxInt64), "GOMEMLIMIT unset: our default")

	tuneGC(func(k string) (string, bool) { return "100", k == "GOGC" || k == "GOMEMLIMIT" })
	require.Equal(t, 100, debug.SetGCPercent(100), "GOGC set: left to the runtime")
	require.Equal(t, int64(math.MaxInt64), debug.SetMemoryLimit(math.MaxInt64), "GOMEMLIMIT set: left to the runtime")
}

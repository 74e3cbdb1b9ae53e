package main

import (
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/require"
)

// Not parallel: it changes the process's collector setting (and restores it).
func TestTuneGC(t *testing.T) {
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })

	tuneGC(func(string) (string, bool) { return "", false })
	require.Equal(t, defaultGOGC, debug.SetGCPercent(100), "GOGC unset: our default")

	tuneGC(func(k string) (string, bool) { return "100", k == "GOGC" })
	require.Equal(t, 100, debug.SetGCPercent(100), "GOGC set: left to the runtime")
}

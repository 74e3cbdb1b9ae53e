package replay

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestLogProgressIsPeriodic(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zap.InfoLevel)
	p := NewLogProgress(zap.New(core), "messages", 10*time.Second)
	clock := p.start
	p.now = func() time.Time { return clock }
	for i, at := range []time.Duration{0, time.Second, 5 * time.Second, 11 * time.Second, 12 * time.Second, 25 * time.Second} {
		clock = p.start.Add(at)
		p.Update(int64(i+1)*100, 1000)
	}
	p.Finish()
	var done []int64
	for _, e := range logs.All() {
		done = append(done, e.ContextMap()["messages"].(int64))
	}
	// The first update, the first after 10s, the first 10s after that, and Finish's final count.
	require.Equal(t, []int64{100, 400, 600}, done[:3])
	require.Len(t, done, 3, "Finish does not repeat a count already logged")
	last := logs.All()[2].ContextMap()
	require.EqualValues(t, 1000, last["total"])
	require.InDelta(t, 24.0, last["per_second"], 0.1) // 600 in 25s
	require.Equal(t, 60.0, last["percent"])
	require.Contains(t, last, "eta")
}

func TestBarProgress(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	p := NewBar(&out, "messages")
	p.Update(0, 200)
	p.Update(200, 200)
	p.Finish()
	require.True(t, strings.Contains(out.String(), "200/200"), out.String())
}

package uploader

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/closedloop/closedloop/store"
)

// BenchmarkBacklogDrain drains a backlog of ready rows through the dispatcher on the SQLite
// store and reports rows/s and batch fill (rows per request over the batch size; the target
// is ≥ 0.95 under backlog).
func BenchmarkBacklogDrain(b *testing.B) {
	const rows, batch = 20000, 1000
	for range b.N {
		b.StopTimer()
		ctx := context.Background()
		st, err := store.Open(ctx, store.Config{Driver: store.DriverSQLite, Path: b.TempDir() + "/x.db", MigrateOnStart: true}, zap.NewNop())
		require.NoError(b, err)
		seed := newRows("k", rows)
		for i := 0; i < len(seed); i += 5000 {
			_, err := st.WriteBatch(ctx, store.Batch{Conversions: seed[i:min(i+5000, len(seed))]})
			require.NoError(b, err)
		}
		api := newFakeAPI(b, allOK)
		opts := testOptions()
		d := New(testDest, DestinationConfig{MaxAttempts: 3}, &keysPlatform{url: api.srv.URL, max: batch}, st, opts, zap.NewNop(), NewMetrics(prometheus.NewRegistry()))
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		b.StartTimer()
		start := time.Now()
		go func() { done <- d.Run(runCtx) }()
		tick := time.NewTicker(time.Millisecond)
		for range tick.C {
			n, err := st.CountByState(ctx)
			require.NoError(b, err)
			if n[testDest][store.StateAccepted] == rows {
				break
			}
		}
		tick.Stop()
		elapsed := time.Since(start)
		b.StopTimer()
		cancel()
		require.NoError(b, <-done)
		reqs := api.uploads()
		sent := 0
		for _, r := range reqs {
			sent += len(r.keys)
		}
		b.ReportMetric(float64(rows)/elapsed.Seconds(), "rows/s")
		b.ReportMetric(float64(sent)/float64(len(reqs)*batch), "batch_fill")
		require.NoError(b, st.Close())
		api.srv.Close()
	}
}

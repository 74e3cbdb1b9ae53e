package uploader_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
	"github.com/closedloop/closedloop/uploader/meta"
	"github.com/closedloop/closedloop/uploader/platforms"
	"github.com/closedloop/closedloop/uploader/sandbox"
)

// TestMetaThroughTheSandbox runs the real Meta platform against the sandbox with injected
// 5xx faults and three invalid events, on the real SQLite store: every good conversion takes
// effect exactly once, exactly the invalid ones end rejected, and nothing stays leased.
func TestMetaThroughTheSandbox(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bad := []string{"conv-017", "conv-018", "conv-203"}
	sb := platforms.NewSandbox(sandbox.Options{
		Seed: 7, Platforms: map[string]sandbox.PlatformOptions{meta.Name: {AccessToken: "meta-token"}},
		Faults: sandbox.Faults{Platforms: []string{meta.Name}, Share5xx: 0.3, RejectKeys: bad},
	}, zaptest.NewLogger(t))
	srv := httptest.NewServer(sb)
	t.Cleanup(srv.Close)

	cfg := uploader.DestinationConfig{
		Platform: "meta", BaseURL: srv.URL, Settings: &meta.Settings{DatasetID: "555000111", AccessToken: "meta-token"},
		BatchSize: 100, MaxAttempts: 50,
	}.WithDefaults(meta.Spec())
	require.Empty(t, cfg.Validate("destinations.meta", meta.Spec(), time.Now()))
	p, err := platforms.New("meta-main", cfg, zaptest.NewLogger(t))
	require.NoError(t, err)

	st, err := store.Open(ctx, store.Config{Driver: store.DriverSQLite, Path: t.TempDir() + "/x.db", MigrateOnStart: true}, zaptest.NewLogger(t))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, st.Close()) })
	norm := pii.Normalizer{DefaultRegion: "US"}
	occurred := time.Now().Add(-time.Hour).UTC()
	var rows []store.Conversion
	for i := range 250 {
		ids := pii.Set{}
		require.NoError(t, norm.Add(ids, pii.Email, fmt.Sprintf("person%d@example.com", i)))
		rows = append(rows, store.Conversion{
			Key: fmt.Sprintf("conv-%03d", i), Kind: store.KindConversion, Destination: "meta-main", Platform: "meta",
			Rule: "won", Source: "hubspot", ObjectType: "deal", ObjectID: fmt.Sprint(i), ConversionName: "Purchase",
			OccurredAt: occurred, State: store.StateReady, Identity: store.Identity{Identifiers: ids},
		})
	}
	_, err = st.WriteBatch(ctx, store.Batch{Conversions: rows})
	require.NoError(t, err)

	reg := prometheus.NewRegistry()
	m := uploader.NewMetrics(reg)
	d := uploader.New("meta-main", cfg, p, st, uploader.Options{
		PollInterval: 5 * time.Millisecond, RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Millisecond,
		BackoffBase: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond, LeaseSweepInterval: 50 * time.Millisecond,
	}, zaptest.NewLogger(t), m)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- uploader.RunAll(runCtx, []*uploader.Dispatcher{d}) }()

	list := func() []store.Conversion {
		got, err := st.ListConversions(ctx, store.ListFilter{Destination: "meta-main"})
		require.NoError(t, err)
		return got
	}
	require.Eventually(t, func() bool {
		for _, c := range list() {
			if !c.State.Terminal() {
				return false
			}
		}
		return true
	}, 30*time.Second, 10*time.Millisecond)
	cancel()
	require.NoError(t, <-done)

	counts := sb.Counts()[meta.Name]
	for _, c := range list() {
		require.Empty(t, c.LeaseOwner, c.Key)
		if slices.Contains(bad, c.Key) {
			require.Equal(t, store.StateRejected, c.State, c.Key)
			require.NotEmpty(t, c.Reason)
			continue
		}
		require.Equal(t, store.StateAccepted, c.State, "%s: %s %s", c.Key, c.Reason, c.Detail)
		kc := counts.Keys["555000111/Purchase/"+c.Key] // dataset/event_name/event_id
		require.NotNil(t, kc, c.Key)
		require.Equal(t, 1, kc.Effective, c.Key)
	}
	require.Equal(t, 247, counts.AcceptedUnique)
	require.Greater(t, counts.Faulted, 0, "the 5xx faults happened")
	require.Greater(t, testutil.ToFloat64(m.Requests.WithLabelValues("meta-main", "batch_rejected")), 0.0)
	require.Zero(t, testutil.ToFloat64(m.Paused.WithLabelValues("meta-main")))
}

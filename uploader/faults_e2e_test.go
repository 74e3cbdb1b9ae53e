package uploader_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
	"github.com/closedloop/closedloop/uploader/google"
	"github.com/closedloop/closedloop/uploader/meta"
	"github.com/closedloop/closedloop/uploader/platforms"
	"github.com/closedloop/closedloop/uploader/sandbox"
)

// The outcome rules of issue 12, each against the sandbox with its fault injected, through
// the real platform packages, dispatcher and SQLite store.

type faultRun struct {
	t    *testing.T
	sb   *sandbox.Server
	url  string
	st   *store.Store
	m    *uploader.Metrics
	d    *uploader.Dispatcher
	dest string
	stop func()
}

func startFaultRun(t *testing.T, sb *sandbox.Server, dest string, cfg func(url string) (uploader.DestinationConfig, uploader.Spec), rows []store.Conversion) *faultRun {
	t.Helper()
	ctx := context.Background()
	srv := httptest.NewServer(sb)
	t.Cleanup(srv.Close)
	c, spec := cfg(srv.URL)
	c = c.WithDefaults(spec)
	require.Empty(t, c.Validate("destinations."+dest, spec, time.Now()))
	p, err := platforms.New(dest, c, zaptest.NewLogger(t))
	require.NoError(t, err)
	st, err := store.Open(ctx, store.Config{Driver: store.DriverSQLite, Path: t.TempDir() + "/x.db", MigrateOnStart: true}, zaptest.NewLogger(t))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, st.Close()) })
	for i := range rows {
		rows[i].Destination, rows[i].Platform = dest, c.Platform
	}
	_, err = st.WriteBatch(ctx, store.Batch{Conversions: rows})
	require.NoError(t, err)
	m := uploader.NewMetrics(prometheus.NewRegistry())
	d := uploader.New(dest, c, p, st, uploader.Options{
		PollInterval: 5 * time.Millisecond, RetryMax: 2, RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Millisecond,
		BackoffBase: time.Hour, BackoffMax: time.Hour, LeaseSweepInterval: 20 * time.Millisecond,
		PauseMin: time.Hour, PauseMax: time.Hour, StatusPollInterval: 20 * time.Millisecond,
	}, zaptest.NewLogger(t), m)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- uploader.RunAll(runCtx, []*uploader.Dispatcher{d}) }()
	r := &faultRun{t: t, sb: sb, url: srv.URL, st: st, m: m, d: d, dest: dest}
	r.stop = func() {
		cancel()
		require.NoError(t, <-done)
	}
	t.Cleanup(func() {
		if runCtx.Err() == nil {
			r.stop()
		}
	})
	return r
}

func (r *faultRun) rows() map[string]store.Conversion {
	got, err := r.st.ListConversions(context.Background(), store.ListFilter{Destination: r.dest})
	require.NoError(r.t, err)
	out := map[string]store.Conversion{}
	for _, c := range got {
		out[c.Key] = c
	}
	return out
}

// until waits for every row to satisfy ok.
func (r *faultRun) until(ok func(store.Conversion) bool) {
	r.t.Helper()
	require.Eventually(r.t, func() bool {
		for _, c := range r.rows() {
			if !ok(c) {
				return false
			}
		}
		return true
	}, 20*time.Second, 10*time.Millisecond)
}

func metaRows(t *testing.T, n int) []store.Conversion {
	norm := pii.Normalizer{DefaultRegion: "US"}
	var rows []store.Conversion
	for i := range n {
		ids := pii.Set{}
		require.NoError(t, norm.Add(ids, pii.Email, fmt.Sprintf("person%d@example.com", i)))
		rows = append(rows, store.Conversion{
			Key: fmt.Sprintf("conv-%03d", i), Kind: store.KindConversion, Rule: "won", Source: "hubspot", ObjectType: "deal",
			ObjectID: fmt.Sprint(i), ConversionName: "Purchase", OccurredAt: time.Now().Add(-time.Hour).UTC(),
			State: store.StateReady, Identity: store.Identity{Identifiers: ids},
		})
	}
	return rows
}

func metaConfig(url string) (uploader.DestinationConfig, uploader.Spec) {
	return uploader.DestinationConfig{Platform: "meta", BaseURL: url, MaxAttempts: 5,
		Settings: &meta.Settings{DatasetID: "555000111", AccessToken: "meta-token"}}, meta.Spec()
}

func googleRows(t *testing.T, n int, action func(i int) string) []store.Conversion {
	var rows []store.Conversion
	for i := range n {
		rows = append(rows, store.Conversion{
			Key: fmt.Sprintf("g-%03d", i), Kind: store.KindConversion, Rule: "won", Source: "hubspot", ObjectType: "deal",
			ObjectID: fmt.Sprint(i), ConversionName: action(i), OccurredAt: time.Now().Add(-24 * time.Hour).UTC(),
			State: store.StateReady, Identity: store.Identity{Clicks: []store.Click{{Type: "gclid", ID: fmt.Sprintf("gclid-%d", i), At: time.Now().Add(-48 * time.Hour).UTC()}}},
		})
	}
	return rows
}

func googleConfig(platform string) func(url string) (uploader.DestinationConfig, uploader.Spec) {
	return func(url string) (uploader.DestinationConfig, uploader.Spec) {
		spec := google.DataManagerSpec()
		if platform == "google_ads" {
			spec = google.AdsSpec()
		}
		return uploader.DestinationConfig{Platform: platform, BaseURL: url, MaxAttempts: 5, Settings: &google.Settings{
			CustomerID: "1234567890", ClientID: "c", ClientSecret: "s", RefreshToken: "r", TokenURL: url + "/token",
		}}, spec
	}
}

func TestFaultMetaAnswerItDoesNotKnowKeepsEveryRow(t *testing.T) {
	t.Parallel()
	sb := platforms.NewSandbox(sandbox.Options{Faults: sandbox.Faults{ShareUnknownError: 1}}, zaptest.NewLogger(t))
	r := startFaultRun(t, sb, "meta-crm", metaConfig, metaRows(t, 4))
	r.until(func(c store.Conversion) bool { return c.Attempts == 1 && c.State == store.StateReady })
	r.stop()
	for _, c := range r.rows() {
		require.Equal(t, store.StateReady, c.State, "kept for a retry, never rejected")
		require.Equal(t, "2388099", c.Reason)
	}
	require.Equal(t, 1, sb.Counts()[meta.Name].Faulted, "not bisected: an answer naming no row is the request's")
	require.Equal(t, 1.0, testutil.ToFloat64(r.m.Unrecognised.WithLabelValues("meta-crm", "2388099")))
}

func TestFaultAdsUnknownConversionActionHoldsOnlyItsRows(t *testing.T) {
	t.Parallel()
	sb := platforms.NewSandbox(sandbox.Options{Faults: sandbox.Faults{RejectMarker: "666"}}, zaptest.NewLogger(t))
	rows := googleRows(t, 6, func(i int) string {
		if i%3 == 0 {
			return "666" // not a conversion action of this account in the sandbox
		}
		return "987654321"
	})
	r := startFaultRun(t, sb, "ads", googleConfig("google_ads"), rows)
	r.until(func(c store.Conversion) bool { return c.State == store.StateAccepted || c.State == store.StateHeld })
	r.stop()
	for k, c := range r.rows() {
		if c.ConversionName == "666" {
			require.Equal(t, store.StateHeld, c.State, k)
			require.Equal(t, "NO_CONVERSION_ACTION_FOUND", c.Reason)
			continue
		}
		require.Equal(t, store.StateAccepted, c.State, k)
	}
	st := r.d.Status()
	require.False(t, st.Paused, "the other conversion actions kept flowing")
	require.Len(t, st.Held, 1)
	require.Equal(t, "666", st.Held[0].Conversion)
}

func TestFaultRoutineTokenExpiryIsRefreshedNotPaused(t *testing.T) {
	t.Parallel()
	sb := platforms.NewSandbox(sandbox.Options{}, zaptest.NewLogger(t))
	rows := googleRows(t, 3, func(int) string { return "987654321" })
	r := startFaultRun(t, sb, "ads", googleConfig("google_ads"), rows)
	r.until(func(c store.Conversion) bool { return c.State == store.StateAccepted })
	sb.RevokeTokens()
	more := googleRows(t, 6, func(int) string { return "987654321" })[3:]
	for i := range more {
		more[i].Destination, more[i].Platform = "ads", "google_ads"
	}
	_, err := r.st.WriteBatch(context.Background(), store.Batch{Conversions: more})
	require.NoError(t, err)
	r.until(func(c store.Conversion) bool { return c.State == store.StateAccepted })
	r.stop()
	require.Equal(t, 1, sb.Counts()[google.AdsName].Refused, "the cached token was refused once")
	require.Zero(t, testutil.ToFloat64(r.m.Paused.WithLabelValues("ads")), "never paused")
}

func TestFaultDataManagerPartialStatusIsNotAccepted(t *testing.T) {
	t.Parallel()
	rows := googleRows(t, 4, func(int) string { return "987654321" })
	sb := platforms.NewSandbox(sandbox.Options{Faults: sandbox.Faults{AsyncRejectKeys: []string{"g-002"}}}, zaptest.NewLogger(t))
	r := startFaultRun(t, sb, "dm", googleConfig("google"), rows)
	r.until(func(c store.Conversion) bool { return c.State.Terminal() })
	r.stop()
	for k, c := range r.rows() {
		require.Equal(t, store.StatePartial, c.State, k)
		require.True(t, strings.HasPrefix(c.Reason, "1 of 4 failed per the platform"), c.Reason)
	}
}

func TestFaultSetupInsideA5xxPausesWithoutInProcessRetries(t *testing.T) {
	t.Parallel()
	sb := platforms.NewSandbox(sandbox.Options{Faults: sandbox.Faults{ShareSetupIn5xx: 1}}, zaptest.NewLogger(t))
	r := startFaultRun(t, sb, "meta-crm", metaConfig, metaRows(t, 3))
	require.Eventually(t, func() bool { return r.d.Status().Paused }, 10*time.Second, 5*time.Millisecond)
	r.stop()
	require.Equal(t, 1, sb.Counts()[meta.Name].Faulted, "one request, its body read before any retry")
	require.Contains(t, r.d.Status().Reason, "190")
	for _, c := range r.rows() {
		require.Equal(t, store.StateReady, c.State)
		require.Zero(t, c.Attempts)
	}
}

func TestFaultABatchThatFailedTogetherRetriesTogether(t *testing.T) {
	t.Parallel()
	sb := platforms.NewSandbox(sandbox.Options{Faults: sandbox.Faults{Share5xx: 1}}, zaptest.NewLogger(t))
	r := startFaultRun(t, sb, "meta-crm", metaConfig, metaRows(t, 20))
	r.until(func(c store.Conversion) bool { return c.Attempts == 1 && c.State == store.StateReady })
	r.stop()
	next := map[time.Time]int{}
	for _, c := range r.rows() {
		next[c.NextAttemptAt]++
	}
	require.Len(t, next, 1, "one backoff for the batch: %v", next)
}

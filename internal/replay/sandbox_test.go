package replay_test

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/config"
	"github.com/closedloop/closedloop/internal/replay"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
	"github.com/closedloop/closedloop/uploader/google"
	"github.com/closedloop/closedloop/uploader/meta"
	"github.com/closedloop/closedloop/uploader/platforms"
	"github.com/closedloop/closedloop/uploader/sandbox"
	"github.com/closedloop/closedloop/uploader/tiktok"
)

// pointAt sends every destination of cfg to the sandbox at url.
func pointAt(cfg *config.Config, url string) {
	for name, d := range cfg.Destinations {
		d.BaseURL = url
		if g, ok := d.Settings.(*google.Settings); ok {
			g.TokenURL = url + "/token"
		}
		cfg.Destinations[name] = d
	}
}

// uploadAll runs one dispatcher per destination of cfg until no row is ready, leased or
// waiting for its asynchronous status, then stops them.
func uploadAll(t *testing.T, cfg *config.Config, st *store.Store) {
	t.Helper()
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	var ds []*uploader.Dispatcher
	for _, name := range cfg.DestinationNames() {
		p, err := platforms.New(name, cfg.Destinations[name], log)
		require.NoError(t, err)
		ds = append(ds, uploader.New(name, cfg.Destinations[name], p, st, uploader.Options{
			PollInterval: 10 * time.Millisecond, RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Millisecond,
			BackoffBase: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond, LeaseSweepInterval: 50 * time.Millisecond,
			StatusPollInterval: 20 * time.Millisecond,
		}, log, nil))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- uploader.RunAll(ctx, ds) }()
	require.Eventually(t, func() bool {
		by, err := st.CountByState(context.Background())
		require.NoError(t, err)
		for _, states := range by {
			if states[store.StateReady]+states[store.StateInFlight]+states[store.StateSent] > 0 {
				return false
			}
		}
		return true
	}, 60*time.Second, 20*time.Millisecond, "every ready row is uploaded")
	cancel()
	require.NoError(t, <-done)
}

// requireExactlyOnce checks that no dedup key took effect twice on any platform and
// returns the events that took effect per platform.
func requireExactlyOnce(t *testing.T, sb *sandbox.Server) map[string]int {
	t.Helper()
	out := map[string]int{}
	for platform, c := range sb.Counts() {
		require.Zero(t, c.Duplicates, "%s: a conversion was sent twice", platform)
		for key, kc := range c.Keys {
			require.Equal(t, 1, kc.Received, "%s %s", platform, key)
			require.Equal(t, 1, kc.Effective, "%s %s", platform, key)
		}
		if c.AcceptedUnique > 0 {
			out[platform] = c.AcceptedUnique
		}
	}
	return out
}

// TestKafkaReplayThroughTheSandbox runs the uploader after the live run and after each
// replay: the platforms (the sandbox) receive every conversion once, replays of history
// already uploaded send nothing, and a replay for a new destination uploads to it alone.
func TestKafkaReplayThroughTheSandbox(t *testing.T) {
	t.Parallel()
	const partitions = 2
	e := newKafkaEnv(t, partitions)
	sb := platforms.NewSandbox(sandbox.Options{Seed: 1}, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	srv := httptest.NewServer(sb)
	t.Cleanup(srv.Close)
	pointAt(e.cfg, srv.URL)
	h := produceThreeDays(t, e, 60)
	allMatched := h.matched[0] + h.matched[1] + h.matched[2]

	runLive(t, e, partitions)
	uploadAll(t, e.cfg, e.st)
	live := requireExactlyOnce(t, sb)
	// Every matched deal but the fifth ones (no identifier) is uploaded to both.
	withID := 0
	for d := 0; d < 3; d++ {
		for i := 0; i < h.perDay; i++ {
			if i%3 != 0 && i%5 != 0 {
				withID++
			}
		}
	}
	require.Equal(t, map[string]int{google.DataManagerName: withID, meta.Name: withID}, live)

	r := newReplayer(t, e.cfg, e.st, time.Now())
	ctx := context.Background()
	for _, rng := range []replay.KafkaOptions{{From: h.day[1], To: h.day[2]}, {From: h.day[1], To: h.day[2]}, {From: h.day[0], To: h.day[3]}} {
		sum, err := r.Kafka(ctx, rng)
		require.NoError(t, err)
		require.Zero(t, sum.Conversions.New)
		uploadAll(t, e.cfg, e.st)
		require.Equal(t, live, requireExactlyOnce(t, sb), "replaying uploaded history sends nothing")
	}

	withTikTok := *e.cfg
	withTikTok.Mappings = append([]crm.MappingRule(nil), e.cfg.Mappings...)
	rule := withTikTok.Mappings[0]
	rule.Destinations = append(append([]crm.RuleDestination(nil), rule.Destinations...), crm.RuleDestination{Destination: "tiktok-crm", Conversion: "CompletePayment"})
	withTikTok.Mappings[0] = rule
	sum, err := newReplayer(t, &withTikTok, e.st, time.Now()).Kafka(ctx, replay.KafkaOptions{
		Options: replay.Options{Destinations: []string{"tiktok-crm"}}, From: h.day[0], To: h.day[3]})
	require.NoError(t, err)
	require.Equal(t, allMatched, sum.Conversions.New)
	uploadAll(t, &withTikTok, e.st)
	require.Equal(t, map[string]int{google.DataManagerName: withID, meta.Name: withID, tiktok.Name: withID}, requireExactlyOnce(t, sb),
		"the new destination got its history; the others nothing more")
}

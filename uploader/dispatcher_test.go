package uploader

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/store"
)

func TestBatchesFillToTheSmallerOfConfigAndPlatformLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		rows      int
		platform  int
		batchSize int
		want      []int
	}{
		{name: "platform limit", rows: 25, platform: 10, want: []int{10, 10, 5}},
		{name: "config below platform", rows: 9, platform: 10, batchSize: 4, want: []int{4, 4, 1}},
		{name: "config above platform is capped", rows: 12, platform: 5, batchSize: 50, want: []int{5, 5, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t, setupArgs{
				rows:     newRows("k", tt.rows),
				cfg:      DestinationConfig{BatchSize: tt.batchSize},
				platform: func(url string) Platform { return &keysPlatform{url: url, max: tt.platform} },
			})
			f.start(t)
			f.settled(t)
			f.stop(t)

			require.Equal(t, tt.want, batchSizes(f.api.uploads()))
			rows := f.out.all()
			requireNoLeases(t, rows)
			for _, r := range rows {
				require.Equal(t, store.StateAccepted, r.State, r.Key)
				require.Equal(t, "accepted", r.Reason)
				require.Equal(t, 1, r.Attempts)
			}
			require.Equal(t, float64(tt.rows), testutil.ToFloat64(f.m.Rows.WithLabelValues(testDest, "accepted")))
			require.Equal(t, float64(len(tt.want)), testutil.ToFloat64(f.m.Requests.WithLabelValues(testDest, "ok")))
		})
	}
}

func TestBisectingIsolatesExactlyTheBadRows(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		rows     int
		bad      []string
		requests int // 1 + two per level of the bisection tree that holds a bad row
	}{
		{name: "none bad", rows: 16, requests: 1},
		{name: "one bad of 16", rows: 16, bad: []string{"k003"}, requests: 9},
		{name: "one bad at each end", rows: 16, bad: []string{"k000", "k015"}, requests: 15},
		{name: "two bad of four", rows: 4, bad: []string{"k000", "k003"}, requests: 7},
		{name: "a single bad row", rows: 1, bad: []string{"k000"}, requests: 1},
		{name: "odd batch", rows: 5, bad: []string{"k004"}, requests: 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t, setupArgs{
				rows:     newRows("k", tt.rows),
				respond:  rejectBatchesWith(tt.bad...),
				platform: func(url string) Platform { return &keysPlatform{url: url, max: 16} },
			})
			f.start(t)
			f.settled(t)
			f.stop(t)

			require.Len(t, f.api.uploads(), tt.requests)
			rows := f.out.all()
			requireNoLeases(t, rows)
			for _, r := range rows {
				require.Equal(t, 1, r.Attempts, r.Key)
				if slices.Contains(tt.bad, r.Key) {
					require.Equal(t, store.StateRejected, r.State, r.Key)
					require.Equal(t, "INVALID_ARGUMENT", r.Reason)
					require.Equal(t, "an event is invalid", r.Detail)
					continue
				}
				require.Equal(t, store.StateAccepted, r.State, r.Key)
			}
			// The first request carried the whole batch; no bad row ever rode with a good
			// one in an accepted request.
			require.Len(t, f.api.uploads()[0].keys, tt.rows)
		})
	}
}

func TestTransientFailureSchedulesOnePersistedJitteredRetryForTheBatch(t *testing.T) {
	t.Parallel()
	opts := testOptions()
	opts.RetryMax = 1
	f := setup(t, setupArgs{
		rows: newRows("k", 20), opts: &opts, cfg: DestinationConfig{MaxAttempts: 10},
		respond:  func([]string) reply { return reply{code: http.StatusBadGateway} },
		platform: func(url string) Platform { return &keysPlatform{url: url, max: 20} },
	})
	before := time.Now()
	f.start(t)
	f.settled(t)
	after := time.Now()
	f.stop(t)

	require.Len(t, f.api.uploads(), 2, "one request and one in-process retry")
	var nexts []time.Time
	for _, r := range f.out.all() {
		require.Equal(t, store.StateReady, r.State)
		require.Equal(t, "http_502", r.Reason)
		require.Equal(t, 1, r.Attempts)
		require.Empty(t, r.LeaseOwner)
		require.False(t, r.NextAttemptAt.Before(before.Add(30*time.Minute).Truncate(time.Microsecond)), "%s earlier than half the backoff", r.NextAttemptAt)
		require.False(t, r.NextAttemptAt.After(after.Add(time.Hour)), "%s later than the backoff", r.NextAttemptAt)
		nexts = append(nexts, r.NextAttemptAt)
	}
	slices.SortFunc(nexts, time.Time.Compare)
	require.Len(t, slices.CompactFunc(nexts, time.Time.Equal), 1, "the batch failed together: one jittered wait, so it is sent together again")
	require.Equal(t, 20.0, testutil.ToFloat64(f.m.Rows.WithLabelValues(testDest, "transient")))
	require.Equal(t, 1.0, testutil.ToFloat64(f.m.Requests.WithLabelValues(testDest, "transient")))
	require.Greater(t, testutil.ToFloat64(f.m.Backoff.WithLabelValues(testDest)), 0.0)
}

func TestRetryScheduleDoublesWithJitterUpToTheMax(t *testing.T) {
	t.Parallel()
	opts := testOptions() // BackoffBase 1h, BackoffMax 8h
	d := New(testDest, DestinationConfig{MaxAttempts: 10}, &keysPlatform{max: 1}, openStore(t), opts, nil, nil)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		attempts    int // before this attempt
		wantNominal time.Duration
	}{
		{0, time.Hour}, {1, 2 * time.Hour}, {2, 4 * time.Hour}, {3, 8 * time.Hour}, {6, 8 * time.Hour},
	}
	for _, tt := range tests {
		for range 50 {
			o := d.retryOutcome(&store.Conversion{Key: "k", Attempts: tt.attempts}, "TRY_LATER", "", 0, now, true)
			require.Equal(t, store.StateReady, o.State)
			require.True(t, o.CountAttempt)
			wait := o.NextAttemptAt.Sub(now)
			require.GreaterOrEqual(t, wait, tt.wantNominal/2, "attempt %d", tt.attempts+1)
			require.LessOrEqual(t, wait, tt.wantNominal, "attempt %d", tt.attempts+1)
		}
	}
	o := d.retryOutcome(&store.Conversion{Key: "k", Attempts: 9}, "TRY_LATER", "busy", 0, now, true)
	require.Equal(t, store.StateFailed, o.State)
	require.Equal(t, "gave up after 10 attempts: busy", o.Detail)
	o = d.retryOutcome(&store.Conversion{Key: "k", Attempts: 9}, "too_recent", "", time.Hour, now, false)
	require.Equal(t, store.StateReady, o.State, "a wait asked for by Check is not an attempt")
	require.Equal(t, now.Add(time.Hour), o.NextAttemptAt)
}

func TestRetryAfterIsHonoured(t *testing.T) {
	t.Parallel()

	t.Run("long wait is persisted on the rows, not waited in process", func(t *testing.T) {
		t.Parallel()
		f := setup(t, setupArgs{
			rows: newRows("k", 3),
			respond: func([]string) reply {
				return reply{code: http.StatusTooManyRequests, header: map[string]string{"Retry-After": "3600"}}
			},
		})
		before := time.Now()
		f.start(t)
		f.settled(t)
		after := time.Now()
		f.stop(t)

		require.Len(t, f.api.uploads(), 1, "a Retry-After beyond RetryWaitMax is not retried in process")
		for _, r := range f.out.all() {
			require.Equal(t, store.StateReady, r.State)
			require.Equal(t, "http_429", r.Reason)
			require.False(t, r.NextAttemptAt.Before(before.Add(time.Hour)))
			require.False(t, r.NextAttemptAt.After(after.Add(time.Hour)))
		}
		require.Equal(t, 1.0, testutil.ToFloat64(f.m.Throttled.WithLabelValues(testDest)))
	})

	t.Run("short wait is waited in process", func(t *testing.T) {
		t.Parallel()
		var calls atomic.Int32
		opts := testOptions()
		opts.RetryWaitMax = 2 * time.Second
		f := setup(t, setupArgs{
			rows: newRows("k", 3), opts: &opts,
			respond: func(keys []string) reply {
				if calls.Add(1) == 1 {
					return reply{code: http.StatusServiceUnavailable, header: map[string]string{"Retry-After": "1"}}
				}
				return allOK(keys)
			},
		})
		f.start(t)
		f.settled(t)
		f.stop(t)

		reqs := f.api.uploads()
		require.Len(t, reqs, 2)
		require.GreaterOrEqual(t, reqs[1].at.Sub(reqs[0].at), 900*time.Millisecond)
		require.GreaterOrEqual(t, testutil.ToFloat64(f.m.Backoff.WithLabelValues(testDest)), 1.0)
		for _, r := range f.out.all() {
			require.Equal(t, store.StateAccepted, r.State)
			require.Equal(t, 1, r.Attempts, "in-process retries are one attempt")
		}
	})

	t.Run("per-row transient takes the header's wait", func(t *testing.T) {
		t.Parallel()
		f := setup(t, setupArgs{
			rows: newRows("k", 2),
			respond: func(keys []string) reply {
				r := perKey(keys, func(string) string { return "retry" })
				r.header = map[string]string{"Retry-After": "120"}
				return r
			},
		})
		before := time.Now()
		f.start(t)
		f.settled(t)
		f.stop(t)
		for _, r := range f.out.all() {
			require.Equal(t, store.StateReady, r.State)
			require.Equal(t, "TRY_LATER", r.Reason)
			require.WithinDuration(t, before.Add(2*time.Minute), r.NextAttemptAt, 5*time.Second)
		}
	})
}

func TestMaxAttemptsEndsTheRowFailed(t *testing.T) {
	t.Parallel()
	opts := testOptions()
	opts.BackoffBase, opts.BackoffMax = time.Millisecond, 2*time.Millisecond
	f := setup(t, setupArgs{
		rows: newRows("k", 4), opts: &opts, cfg: DestinationConfig{MaxAttempts: 3},
		respond: func(keys []string) reply { return perKey(keys, func(string) string { return "retry" }) },
	})
	f.start(t)
	require.Eventually(t, func() bool {
		for _, r := range f.out.all() {
			if r.State != store.StateFailed {
				return false
			}
		}
		return true
	}, 10*time.Second, 5*time.Millisecond)
	f.stop(t)

	got := f.out.all()
	requireNoLeases(t, got)
	for _, r := range got {
		require.Equal(t, "TRY_LATER", r.Reason)
		require.Equal(t, "gave up after 3 attempts: ", r.Detail)
		require.Equal(t, 3, r.Attempts)
	}
	sent := map[string]int{}
	for _, req := range f.api.uploads() {
		for _, k := range req.keys {
			sent[k]++
		}
	}
	require.Equal(t, map[string]int{"k000": 3, "k001": 3, "k002": 3, "k003": 3}, sent)
	require.Equal(t, 4.0, testutil.ToFloat64(f.m.Rows.WithLabelValues(testDest, "failed")))
	require.Equal(t, 8.0, testutil.ToFloat64(f.m.Rows.WithLabelValues(testDest, "transient")))
}

func TestEveryOutcomeIsRecordedAndReleasesTheLease(t *testing.T) {
	t.Parallel()
	rows := slices.Concat(newRows("ok", 2), newRows("bad", 2), newRows("retry", 1), newRows("late", 1),
		newRows("expired", 1), newRows("skip", 1), newRows("young", 1))
	status := func(k string) string {
		for p, s := range map[string]string{"ok": "ok", "bad": "bad", "retry": "retry", "late": "expired"} {
			if strings.HasPrefix(k, p) {
				return s
			}
		}
		return "unexpected"
	}
	f := setup(t, setupArgs{
		rows:    rows,
		respond: func(keys []string) reply { return perKey(keys, status) },
	})
	start := time.Now()
	f.start(t)
	f.settled(t)
	f.stop(t)

	require.Equal(t, []int{6}, batchSizes(f.api.uploads()), "rows turned away by Check are never sent")
	want := map[string]struct {
		state    store.State
		reason   string
		attempts int
	}{
		"ok000":      {store.StateAccepted, "accepted", 1},
		"ok001":      {store.StateAccepted, "accepted", 1},
		"bad000":     {store.StateRejected, "INVALID_KEY", 1},
		"bad001":     {store.StateRejected, "INVALID_KEY", 1},
		"retry000":   {store.StateReady, "TRY_LATER", 1},
		"late000":    {store.StateExpired, "EXPIRED_EVENT", 1},
		"expired000": {store.StateExpired, "too_old", 0},
		"skip000":    {store.StateSkipped, "consent_denied", 0},
		"young000":   {store.StateReady, "too_recent", 0},
	}
	got := f.out.all()
	requireNoLeases(t, got)
	require.Len(t, got, len(want))
	for _, r := range got {
		w := want[r.Key]
		require.Equal(t, w.state, r.State, r.Key)
		require.Equal(t, w.reason, r.Reason, r.Key)
		require.Equal(t, w.attempts, r.Attempts, r.Key)
	}
	young := f.out.get("young000")
	require.WithinDuration(t, start.Add(time.Hour), young.NextAttemptAt, 5*time.Second, "Check's RetryAfter is kept")
}

func TestSetupProblemPausesAndAProbeResumes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		fail  func(keys []string) reply // answer while broken
		build bool                      // BuildRequest fails with a *SetupError instead
	}{
		{name: "401", fail: func([]string) reply { return reply{code: http.StatusUnauthorized} }},
		{name: "403", fail: func([]string) reply { return reply{code: http.StatusForbidden} }},
		{name: "per-row setup", fail: func(keys []string) reply { return perKey(keys, func(string) string { return "setup" }) }},
		{name: "credentials", build: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var broken atomic.Bool
			broken.Store(true)
			rows := newRows("k", 5)
			for i := range rows {
				rows[i].Reason, rows[i].Detail = "earlier", "kept"
			}
			f := setup(t, setupArgs{
				rows: rows,
				respond: func(keys []string) reply {
					if broken.Load() && tt.fail != nil {
						return tt.fail(keys)
					}
					return allOK(keys)
				},
				platform: func(url string) Platform {
					return &keysPlatform{url: url, max: 10, setupErr: func() error {
						if tt.build && broken.Load() {
							return &Error{Class: ClassSetup, Reason: "token_refresh", Detail: "invalid_grant"}
						}
						return nil
					}}
				},
			})
			paused := f.m.Paused.WithLabelValues(testDest)
			f.start(t)
			require.Eventually(t, func() bool { return testutil.ToFloat64(paused) == 1 }, 5*time.Second, time.Millisecond)
			require.True(t, f.d.Status().Paused)
			require.NotEmpty(t, f.d.Status().Reason)
			// Several probes fail while broken; the rows stay as they were.
			probes := func() int {
				if tt.build {
					return int(testutil.ToFloat64(f.m.Requests.WithLabelValues(testDest, "setup")))
				}
				return len(f.api.uploads())
			}
			require.Eventually(t, func() bool { return probes() >= 3 }, 5*time.Second, time.Millisecond)
			require.Eventually(t, func() bool {
				for _, r := range f.out.all() {
					if r.State != store.StateReady {
						return false
					}
				}
				return true
			}, 5*time.Second, time.Millisecond)
			for _, r := range f.out.all() {
				require.Equal(t, 0, r.Attempts, "a pause counts no attempt")
				require.Equal(t, "earlier", r.Reason)
				require.Equal(t, "kept", r.Detail)
			}

			broken.Store(false)
			f.settled(t)
			require.Eventually(t, func() bool { return testutil.ToFloat64(paused) == 0 }, 5*time.Second, time.Millisecond)
			require.False(t, f.d.Status().Paused)
			f.stop(t)
			for _, r := range f.out.all() {
				require.Equal(t, store.StateAccepted, r.State)
				require.Equal(t, 1, r.Attempts)
			}
		})
	}
}

func TestPauseWaitGrowsExponentiallyUpToTheMax(t *testing.T) {
	t.Parallel()
	opts := testOptions()
	opts.PauseMin, opts.PauseMax = time.Second, 4*time.Second
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	opts.Now = func() time.Time { return now }
	d := New(testDest, DestinationConfig{}, &keysPlatform{max: 1}, openStore(t), opts, nil, nil)
	var waits []time.Duration
	for range 5 {
		d.pause(&Error{Class: ClassSetup, Reason: "r", Detail: "d"})
		waits = append(waits, d.untilProbe())
	}
	require.Equal(t, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second, 4 * time.Second}, waits)
	d.resume()
	require.Zero(t, d.untilProbe())
	require.False(t, d.Status().Paused)
}

func TestRateLimitCapsTheNumberOfRequests(t *testing.T) {
	t.Parallel()
	// A budget of 3 requests now and one an hour: exactly 3 requests happen.
	f := setup(t, setupArgs{
		rows:     newRows("k", 50),
		cfg:      DestinationConfig{RatePerSecond: 1.0 / 3600, Burst: 3},
		platform: func(url string) Platform { return &keysPlatform{url: url, max: 5} },
	})
	f.start(t)
	require.Eventually(t, func() bool { return len(f.api.uploads()) == 3 }, 5*time.Second, time.Millisecond)
	// The fourth batch is claimed and waits on the limiter.
	require.Eventually(t, func() bool { return len(f.out.claimLog()) >= 4 }, 5*time.Second, time.Millisecond)
	require.Never(t, func() bool { return len(f.api.uploads()) > 3 }, 100*time.Millisecond, 5*time.Millisecond)
	f.stop(t)

	// Shutting down hands the waiting batch back: nothing is left leased.
	got := f.out.all()
	requireNoLeases(t, got)
	var accepted, ready int
	for _, r := range got {
		switch r.State {
		case store.StateAccepted:
			accepted++
		case store.StateReady:
			ready++
			require.Zero(t, r.Attempts)
		}
	}
	require.Equal(t, 15, accepted)
	require.Equal(t, 35, ready)
}

func TestReplayRowsTakeAtMostTheReplayShareOfABatch(t *testing.T) {
	t.Parallel()
	replays := newRows("r", 30)
	for i := range replays {
		replays[i].Replay = true
	}
	f := setup(t, setupArgs{
		rows: slices.Concat(newRows("live", 12), replays),
		cfg:  DestinationConfig{ReplayShare: 0.3},
	})
	f.start(t)
	f.settled(t)
	f.stop(t)

	for _, c := range f.out.claimLog() {
		require.LessOrEqual(t, c.ReplayLimit, 3, "30%% of a batch of 10")
	}
	reqs := f.api.uploads()
	for _, r := range reqs {
		n := 0
		for _, k := range r.keys {
			if strings.HasPrefix(k, "r") {
				n++
			}
		}
		require.LessOrEqual(t, n, 3, "replay rows in %v", r.keys)
	}
	// The live rows are not held back by the replay backlog: they go in the first two batches.
	var live int
	for _, r := range reqs[:2] {
		for _, k := range r.keys {
			if strings.HasPrefix(k, "live") {
				live++
			}
		}
	}
	require.Equal(t, 12, live)
	for _, r := range f.out.all() {
		require.Equal(t, store.StateAccepted, r.State)
	}
}

func TestGrouperKeepsBatchesHomogeneous(t *testing.T) {
	t.Parallel()
	f := setup(t, setupArgs{
		rows: slices.Concat(newRows("a", 4), newRows("b", 3)),
		platform: func(url string) Platform {
			return &groupingPlatform{keysPlatform{url: url, max: 10}}
		},
	})
	f.start(t)
	f.settled(t)
	f.stop(t)
	reqs := f.api.uploads()
	require.Len(t, reqs, 2)
	for _, r := range reqs {
		for _, k := range r.keys {
			require.Equal(t, r.keys[0][:1], k[:1], "mixed batch %v", r.keys)
		}
	}
}

func TestSentRowsArePolledUntilAccepted(t *testing.T) {
	t.Parallel()
	f := setup(t, setupArgs{
		rows:    newRows("k", 3),
		respond: func(keys []string) reply { return perKey(keys, func(string) string { return "sent" }) },
		platform: func(url string) Platform {
			return &pollingPlatform{keysPlatform{url: url, max: 10}}
		},
	})
	f.start(t)
	require.Eventually(t, func() bool {
		for _, r := range f.out.all() {
			if r.State != store.StateAccepted {
				return false
			}
		}
		return true
	}, 5*time.Second, time.Millisecond)
	f.stop(t)
	for _, r := range f.out.all() {
		require.Equal(t, "ref-k000", r.PlatformRef)
		require.Equal(t, 1, r.Attempts, "polling counts no attempt")
	}
}

func TestExpiredLeasesAreReleased(t *testing.T) {
	t.Parallel()
	f := setup(t, setupArgs{rows: newRows("k", 2)})
	claimed, err := f.out.Store.ClaimDue(context.Background(), store.Claim{
		Destination: testDest, Owner: "crashed-worker", Limit: 10, LeaseFor: time.Millisecond, Now: time.Now(),
	})
	require.NoError(t, err)
	require.Len(t, claimed, 2)
	f.start(t)
	// Released by the sweep, then claimed and sent by this dispatcher.
	require.Eventually(t, func() bool {
		for _, r := range f.out.all() {
			if r.State != store.StateAccepted {
				return false
			}
		}
		return true
	}, 5*time.Second, time.Millisecond)
}

func TestShutdownAbandonsTheInFlightRequestAndHandsRowsBack(t *testing.T) {
	t.Parallel()
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	f := setup(t, setupArgs{rows: newRows("k", 3)})
	f.api.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case arrived <- struct{}{}:
		default:
		}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) })
	f.start(t)
	<-arrived
	f.stop(t)

	for _, r := range f.out.all() {
		require.Equal(t, store.StateReady, r.State)
		require.Empty(t, r.LeaseOwner)
		require.Zero(t, r.Attempts)
	}
}

func TestRunAllStopsEveryDispatcher(t *testing.T) {
	t.Parallel()
	a := setup(t, setupArgs{rows: newRows("k", 3)})
	b := setup(t, setupArgs{rows: newRows("k", 4)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunAll(ctx, []*Dispatcher{a.d, b.d}) }()
	a.settled(t)
	b.settled(t)
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("RunAll did not return")
	}
	require.Len(t, a.api.uploads(), 1)
	require.Len(t, b.api.uploads(), 1)
}

func TestRunReportsBadArguments(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		d    *Dispatcher
		want string
	}{
		{"no name", New("", DestinationConfig{}, &keysPlatform{max: 1}, openStore(t), Options{}, nil, nil), "name is empty"},
		{"no platform", New("x", DestinationConfig{}, nil, openStore(t), Options{}, nil, nil), "no platform"},
		{"no outbox", New("x", DestinationConfig{}, &keysPlatform{max: 1}, nil, Options{}, nil, nil), "no outbox"},
		{"zero batch", New("x", DestinationConfig{}, &keysPlatform{max: 0}, openStore(t), Options{}, nil, nil), "no rows per batch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.ErrorContains(t, tt.d.Run(context.Background()), tt.want)
		})
	}
}

func TestTransientCredentialFailureRetriesTheRowsLater(t *testing.T) {
	t.Parallel()
	f := setup(t, setupArgs{
		rows: newRows("k", 3),
		platform: func(url string) Platform {
			return &keysPlatform{url: url, max: 10, setupErr: func() error {
				return &Error{Class: ClassTransient, Reason: "token_endpoint_unavailable", Detail: "503 from the token endpoint"}
			}}
		},
	})
	start := time.Now()
	f.start(t)
	f.settled(t)
	f.stop(t)
	require.Empty(t, f.api.uploads(), "nothing reaches the API without credentials")
	for _, r := range f.out.all() {
		require.Equal(t, store.StateReady, r.State)
		require.Equal(t, "token_endpoint_unavailable", r.Reason)
		require.True(t, r.NextAttemptAt.After(start.Add(29*time.Minute)), "backed off, not retried at once")
	}
	require.Zero(t, testutil.ToFloat64(f.m.Paused.WithLabelValues(testDest)), "a transient failure does not pause")
}

func TestRateLimitHoldsAcrossInstancesSharingAStore(t *testing.T) {
	t.Parallel()
	// Two workers on one database, a budget of 3 requests now and one an hour: together
	// they make 3 requests, not 6.
	f := setup(t, setupArgs{
		rows:     newRows("k", 50),
		cfg:      DestinationConfig{RatePerSecond: 1.0 / 3600, Burst: 3},
		platform: func(url string) Platform { return &keysPlatform{url: url, max: 5} },
	})
	opts := testOptions()
	opts.Owner = "second-instance"
	second := New(testDest, DestinationConfig{Platform: "test", MaxAttempts: 5, RatePerSecond: 1.0 / 3600, Burst: 3},
		&keysPlatform{url: f.api.srv.URL, max: 5}, f.out, opts, nil, NewMetrics(nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- second.Run(ctx) }()
	f.start(t)
	require.Eventually(t, func() bool { return len(f.api.uploads()) == 3 }, 5*time.Second, time.Millisecond)
	require.Never(t, func() bool { return len(f.api.uploads()) > 3 }, 200*time.Millisecond, 5*time.Millisecond)
	f.stop(t)
	cancel()
	require.NoError(t, <-done)
	requireNoLeases(t, f.out.all())
}

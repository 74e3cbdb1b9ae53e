package uploader

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/store"
)

// The outcome rules of issue 12: an answer the uploader does not recognise never rejects a
// row; setup is scoped to what is broken; a batch that failed together retries together.

func TestEveryRowRejectedAloneAlikeIsTheRequestsFaultNotTheRows(t *testing.T) {
	t.Parallel()
	f := setup(t, setupArgs{
		rows:     newRows("k", 4),
		respond:  func([]string) reply { return reply{code: http.StatusBadRequest} },
		platform: func(url string) Platform { return &keysPlatform{url: url, max: 16} },
	})
	f.start(t)
	f.settled(t)
	f.stop(t)

	require.Len(t, f.api.uploads(), 7, "bisected down to single rows")
	var next time.Time
	for _, r := range f.out.all() {
		require.Equal(t, store.StateReady, r.State, "%s: kept for a retry, never rejected", r.Key)
		require.Equal(t, "INVALID_ARGUMENT", r.Reason)
		require.Contains(t, r.Detail, "the request is at fault")
		require.Equal(t, 1, r.Attempts)
		if next.IsZero() {
			next = r.NextAttemptAt
		}
		require.Equal(t, next, r.NextAttemptAt, "the batch retries together")
	}
	require.Equal(t, 1.0, testutil.ToFloat64(f.m.Unrecognised.WithLabelValues(testDest, "every_row_rejected:INVALID_ARGUMENT")))
}

func TestAnUnrecognisedAnswerIsRetriedThenFailedNeverRejected(t *testing.T) {
	t.Parallel()
	opts := testOptions()
	opts.BackoffBase, opts.BackoffMax = time.Millisecond, 2*time.Millisecond
	cases := map[string]func([]string) reply{
		"unknown per-row enum": func(keys []string) reply { return perKey(keys, func(string) string { return "unknown" }) },
		"unknown HTTP status":  func([]string) reply { return reply{code: http.StatusTeapot} },
	}
	for name, respond := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := setup(t, setupArgs{rows: newRows("k", 3), opts: &opts, cfg: DestinationConfig{MaxAttempts: 3}, respond: respond})
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
			for _, r := range f.out.all() {
				require.Equal(t, store.StateFailed, r.State, "re-drivable, never rejected")
				require.Equal(t, 3, r.Attempts)
				require.Contains(t, r.Detail, "gave up after 3 attempts")
			}
			require.Equal(t, 0.0, testutil.ToFloat64(f.m.Rows.WithLabelValues(testDest, "permanent")))
			require.False(t, f.d.Status().Paused)
		})
	}
}

func TestAnUnknownConversionActionHoldsOnlyItsRows(t *testing.T) {
	t.Parallel()
	var fixed atomic.Bool
	rows := newRows("good", 3)
	for _, r := range newRows("bad", 2) {
		r.ConversionName = "999"
		rows = append(rows, r)
	}
	f := setup(t, setupArgs{
		rows: rows,
		respond: func(keys []string) reply {
			return perKey(keys, func(k string) string {
				if strings.HasPrefix(k, "bad") && !fixed.Load() {
					return "held"
				}
				return "ok"
			})
		},
	})
	f.start(t)
	require.Eventually(t, func() bool {
		n := 0
		for _, r := range f.out.all() {
			if r.State == store.StateHeld {
				n++
			}
		}
		return n == 2
	}, 5*time.Second, time.Millisecond)

	st := f.d.Status()
	require.False(t, st.Paused, "the destination keeps flowing")
	require.Len(t, st.Held, 1)
	require.Equal(t, "999", st.Held[0].Conversion)
	require.Equal(t, 1.0, testutil.ToFloat64(f.m.HeldActions.WithLabelValues(testDest)))
	require.Equal(t, "NO_CONVERSION_ACTION_FOUND", st.Held[0].Reason)
	for _, r := range f.out.all() {
		if strings.HasPrefix(r.Key, "good") {
			require.Equal(t, store.StateAccepted, r.State, r.Key)
			continue
		}
		require.Equal(t, "NO_CONVERSION_ACTION_FOUND", r.Reason)
		require.Equal(t, 0, r.Attempts, "holding never spends an attempt")
	}

	// The platform is fixed: the next hold probe (PauseMax) sends the held rows.
	fixed.Store(true)
	require.Eventually(t, func() bool {
		for _, r := range f.out.all() {
			if r.State != store.StateAccepted {
				return false
			}
		}
		return true
	}, 5*time.Second, 5*time.Millisecond)
	require.Empty(t, f.d.Status().Held)
	require.Equal(t, 0.0, testutil.ToFloat64(f.m.HeldActions.WithLabelValues(testDest)))
	require.Equal(t, 2.0, testutil.ToFloat64(f.m.Rows.WithLabelValues(testDest, "held")))
}

func TestASetupErrorInsideA5xxIsReadBeforeAnyRetry(t *testing.T) {
	t.Parallel()
	opts := testOptions()
	opts.RetryMax = 2
	f := setup(t, setupArgs{
		rows: newRows("k", 3), opts: &opts,
		respond: func([]string) reply {
			return reply{code: http.StatusInternalServerError, body: map[string]string{"error": "SETUP"}}
		},
	})
	f.start(t)
	require.Eventually(t, func() bool { return f.d.Status().Paused }, 5*time.Second, time.Millisecond)
	f.stop(t)
	require.Equal(t, 0.0, testutil.ToFloat64(f.m.Backoff.WithLabelValues(testDest)), "no in-process retry was waited for")
	first := f.api.uploads()[0].at
	for _, u := range f.api.uploads()[1:] {
		require.GreaterOrEqual(t, u.at.Sub(first), opts.PauseMin/2, "only probes follow, never an in-process retry")
		first = u.at
	}
	for _, r := range f.out.all() {
		require.Equal(t, store.StateReady, r.State)
		require.Equal(t, 0, r.Attempts)
	}
}

func TestATokenTheRefreshFixesIsResentAtOnceNotPaused(t *testing.T) {
	t.Parallel()
	var refused atomic.Int32
	f := setup(t, setupArgs{
		rows: newRows("k", 3),
		respond: func(keys []string) reply {
			if refused.Add(1) == 1 {
				return reply{code: http.StatusUnauthorized, body: map[string]string{"error": "EXPIRED"}}
			}
			return allOK(keys)
		},
		platform: func(url string) Platform { return &refreshingPlatform{keysPlatform{url: url, max: 10}} },
	})
	f.start(t)
	f.settled(t)
	f.stop(t)
	require.Len(t, f.api.uploads(), 2, "refused once, resent at once with a fresh token")
	for _, r := range f.out.all() {
		require.Equal(t, store.StateAccepted, r.State)
	}
	require.Equal(t, 0.0, testutil.ToFloat64(f.m.Paused.WithLabelValues(testDest)))
}

// refreshingPlatform answers a 401 whose body says EXPIRED the way a platform with a
// refreshable token does.
type refreshingPlatform struct{ keysPlatform }

func (p *refreshingPlatform) ParseResponse(resp *http.Response, body []byte, batch []store.Conversion) ([]RowResult, error) {
	if resp.StatusCode == http.StatusUnauthorized && strings.Contains(string(body), "EXPIRED") {
		return nil, &Error{Class: ClassTransient, Reason: "token_expired", Detail: "refreshing", Refreshed: true}
	}
	return p.keysPlatform.ParseResponse(resp, body, batch)
}

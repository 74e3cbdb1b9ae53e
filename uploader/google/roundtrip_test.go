package google_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
	"github.com/closedloop/closedloop/uploader/google"
	"github.com/closedloop/closedloop/uploader/sandbox"
)

func poll(t *testing.T, dm *google.DataManager, ref string, batch []store.Conversion) ([]uploader.RowResult, bool, error) {
	t.Helper()
	req, err := dm.PollRequest(context.Background(), ref)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return dm.ParsePoll(resp, body, batch)
}

func TestDataManagerRoundTrip(t *testing.T) {
	t.Parallel()
	e := setup(t, sandbox.Options{})
	dm := google.NewDataManager(baseConfig("google", e.url), nil, zaptest.NewLogger(t))
	batch := rows(t)

	res, err := send(t, dm, batch)
	require.NoError(t, err)
	require.Len(t, res, 3)
	ref := res[0].PlatformRef
	require.NotEmpty(t, ref)
	for _, r := range res {
		require.Equal(t, uploader.ClassSent, r.Class)
		require.Equal(t, ref, r.PlatformRef)
	}
	polled, done, err := poll(t, dm, ref, batch)
	require.NoError(t, err)
	require.True(t, done)
	for _, r := range polled {
		require.Equal(t, uploader.ClassAccepted, r.Class)
	}

	// A resend (the dispatcher retrying after a lost answer) is received but, keyed by
	// transactionId, takes no second effect.
	_, err = send(t, dm, batch)
	require.NoError(t, err)
	c := e.sb.Counts()[google.DataManagerName]
	require.Equal(t, 6, c.Received)
	require.Equal(t, 3, c.AcceptedUnique)
	require.Equal(t, 3, c.Duplicates)
	for k, kc := range c.Keys {
		require.Equal(t, 1, kc.Effective, k)
	}
}

func TestDataManagerStatusProcessingThenFailed(t *testing.T) {
	t.Parallel()
	clock := now
	e := setup(t, sandbox.Options{
		Now:         func() time.Time { return clock },
		StatusDelay: time.Minute,
		Faults:      sandbox.Faults{AsyncRejectKeys: []string{"k-deal-1-won", "k-deal-2-won", "k-deal-3-won"}},
	})
	dm := google.NewDataManager(baseConfig("google", e.url), nil, zaptest.NewLogger(t))
	batch := rows(t)
	res, err := send(t, dm, batch)
	require.NoError(t, err)
	_, done, err := poll(t, dm, res[0].PlatformRef, batch)
	require.NoError(t, err)
	require.False(t, done, "still PROCESSING")
	clock = clock.Add(2 * time.Minute) // only read by the sandbox after this write, in this goroutine's requests
	polled, done, err := poll(t, dm, res[0].PlatformRef, batch)
	require.NoError(t, err)
	require.True(t, done)
	for _, r := range polled {
		require.Equal(t, uploader.ClassPermanent, r.Class)
		require.Equal(t, "PROCESSING_ERROR_REASON_INVALID_EVENT", r.Reason)
	}
}

func TestDataManagerPartialSuccess(t *testing.T) {
	t.Parallel()
	e := setup(t, sandbox.Options{Faults: sandbox.Faults{AsyncRejectKeys: []string{"k-deal-2-won"}}})
	dm := google.NewDataManager(baseConfig("google", e.url), nil, zaptest.NewLogger(t))
	batch := rows(t)
	res, err := send(t, dm, batch)
	require.NoError(t, err)
	polled, done, err := poll(t, dm, res[0].PlatformRef, batch)
	require.NoError(t, err)
	require.True(t, done)
	for _, r := range polled {
		require.Equal(t, uploader.ClassPartial, r.Class, "never counted as plainly accepted")
		require.Contains(t, r.Reason, "failed per the platform")
		require.Contains(t, r.Detail, "1 of 3 failed per the platform")
		require.Contains(t, r.Detail, "PROCESSING_ERROR_REASON_INVALID_EVENT=1")
	}
}

func TestDataManagerRejections(t *testing.T) {
	t.Parallel()
	t.Run("a bad row rejects the whole request", func(t *testing.T) {
		t.Parallel()
		e := setup(t, sandbox.Options{Faults: sandbox.Faults{RejectKeys: []string{"k-deal-2-won"}}})
		dm := google.NewDataManager(baseConfig("google", e.url), nil, zaptest.NewLogger(t))
		_, err := send(t, dm, rows(t))
		var br *uploader.Error
		require.True(t, errors.As(err, &br), "%v", err)
		require.Equal(t, uploader.ClassBatchRejected, br.Class, "%v", err)
		// Bisecting isolates the bad row; the others go through.
		res, err := send(t, dm, rows(t)[:1])
		require.NoError(t, err)
		require.Equal(t, uploader.ClassSent, res[0].Class)
		require.Equal(t, 0, e.sb.Counts()[google.DataManagerName].Duplicates)
	})
	t.Run("a non-hex hash is refused like the real API", func(t *testing.T) {
		t.Parallel()
		e := setup(t, sandbox.Options{})
		dm := google.NewDataManager(baseConfig("google", e.url), nil, zaptest.NewLogger(t))
		batch := rows(t)
		batch[2].Identity.Identifiers["email/google"] = "not-a-hash"
		_, err := send(t, dm, batch)
		var br *uploader.Error
		require.True(t, errors.As(err, &br), "%v", err)
		require.Equal(t, uploader.ClassBatchRejected, br.Class, "%v", err)
		require.Equal(t, "INVALID_HEX_ENCODING", br.Reason)
		require.Contains(t, br.Detail, "events[2].userData.userIdentifiers[0].emailAddress")
	})
	t.Run("whole-batch fault", func(t *testing.T) {
		t.Parallel()
		e := setup(t, sandbox.Options{Faults: sandbox.Faults{ShareBatchReject: 1}})
		dm := google.NewDataManager(baseConfig("google", e.url), nil, zaptest.NewLogger(t))
		_, err := send(t, dm, rows(t))
		var br *uploader.Error
		require.True(t, errors.As(err, &br), "%v", err)
		require.Equal(t, uploader.ClassBatchRejected, br.Class, "%v", err)
	})
}

func TestGoogleFaults(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		faults sandbox.Faults
		check  func(t *testing.T, err error)
	}{
		{"5xx is transient", sandbox.Faults{Share5xx: 1}, func(t *testing.T, err error) {
			var te *uploader.Error
			require.True(t, errors.As(err, &te), "%v", err)
			require.Equal(t, uploader.ClassTransient, te.Class, "%v", err)
		}},
		{"429 is transient with Retry-After", sandbox.Faults{Share429: 1, RetryAfterSeconds: 3}, func(t *testing.T, err error) {
			var te *uploader.Error
			require.True(t, errors.As(err, &te), "%v", err)
			require.Equal(t, uploader.ClassTransient, te.Class, "%v", err)
			require.Equal(t, 3*time.Second, te.RetryAfter)
			require.Equal(t, "RESOURCE_EXHAUSTED", te.Reason)
		}},
		{"refused token: refreshed once, then a refused fresh token is setup", sandbox.Faults{ExpiredToken: true}, func(t *testing.T, err error) {
			var se *uploader.Error
			require.True(t, errors.As(err, &se), "%v", err)
			require.Equal(t, uploader.ClassSetup, se.Class, "%v", err)
			require.NotContains(t, se.Error(), "sandbox-access-token", "the access token is never in an error")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := setup(t, sandbox.Options{Faults: tc.faults})
			for _, p := range []uploader.Platform{
				google.NewDataManager(baseConfig("google", e.url), nil, zaptest.NewLogger(t)),
				google.NewAdsAPI(baseConfig("google_ads", e.url), nil, zaptest.NewLogger(t)),
			} {
				_, err := send(t, p, rows(t))
				var re *uploader.Error
				if errors.As(err, &re) && re.Refreshed {
					// What the dispatcher does: resend once, at once, with a fresh token.
					_, err = send(t, p, rows(t))
				}
				tc.check(t, err)
			}
		})
	}
	t.Run("timeout: processed, the client gives up, the resend is deduplicated", func(t *testing.T) {
		t.Parallel()
		e := setup(t, sandbox.Options{Faults: sandbox.Faults{ShareTimeout: 1, TimeoutDelayMS: 5000}})
		dm := google.NewDataManager(baseConfig("google", e.url), nil, zaptest.NewLogger(t))
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		req, err := dm.BuildRequest(ctx, rows(t), now)
		require.NoError(t, err)
		_, err = http.DefaultClient.Do(req)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		e.sb.SetFaults(sandbox.Faults{})
		_, err = send(t, dm, rows(t))
		require.NoError(t, err)
		c := e.sb.Counts()[google.DataManagerName]
		require.Equal(t, 3, c.AcceptedUnique)
		require.Equal(t, 3, c.Duplicates)
	})
	t.Run("revoked refresh token is a setup error from BuildRequest", func(t *testing.T) {
		t.Parallel()
		e := setup(t, sandbox.Options{})
		cfg := baseConfig("google", e.url)
		settings(cfg).RefreshToken = "rt-not-known-to-the-sandbox"
		dm := google.NewDataManager(cfg, nil, zaptest.NewLogger(t))
		_, err := dm.BuildRequest(context.Background(), rows(t), now)
		var se *uploader.Error
		require.True(t, errors.As(err, &se), "%v", err)
		require.Equal(t, uploader.ClassSetup, se.Class, "%v", err)
		require.Equal(t, "oauth_invalid_grant", se.Reason)
		require.NotContains(t, err.Error(), "rt-not-known", "the refresh token is never in an error")
	})
}

func TestAdsRoundTrip(t *testing.T) {
	t.Parallel()
	e := setup(t, sandbox.Options{Faults: sandbox.Faults{RejectKeys: []string{"k-deal-2-won"}, RejectMarker: "666"}})
	ads := google.NewAdsAPI(baseConfig("google_ads", e.url), nil, zaptest.NewLogger(t))
	batch := rows(t)
	res, err := send(t, ads, batch)
	require.NoError(t, err)
	require.Equal(t, uploader.ClassAccepted, res[0].Class)
	require.Equal(t, uploader.ClassPermanent, res[1].Class, "named by index in partialFailureError")
	require.Equal(t, "CLICK_NOT_FOUND", res[1].Reason)
	require.Equal(t, uploader.ClassAccepted, res[2].Class)

	// Resend: ORDER_ID_ALREADY_IN_USE means the platform already has it.
	res, err = send(t, ads, batch[:1])
	require.NoError(t, err)
	require.Equal(t, uploader.ClassAccepted, res[0].Class)
	require.Equal(t, "ORDER_ID_ALREADY_IN_USE", res[0].Reason)

	// Unknown conversion action: that action's rows are held.
	bad := rows(t)[:1]
	bad[0].Key, bad[0].ConversionName = "k-other", "666"
	res, err = send(t, ads, bad)
	require.NoError(t, err)
	require.Equal(t, uploader.ClassHeld, res[0].Class)
	require.Equal(t, "NO_CONVERSION_ACTION_FOUND", res[0].Reason)

	// Retraction by orderId, twice.
	retraction := []store.Conversion{{Key: "k-deal-1-lost", Kind: store.KindRetraction, RetractsKey: "k-deal-1-won",
		ConversionName: "987654321", OccurredAt: time.Date(2026, 10, 18, 10, 0, 0, 0, time.UTC)}}
	require.Nil(t, ads.Check(&retraction[0], now))
	res, err = send(t, ads, retraction)
	require.NoError(t, err)
	require.Equal(t, uploader.ClassAccepted, res[0].Class)
	res, err = send(t, ads, retraction)
	require.NoError(t, err)
	require.Equal(t, uploader.ClassAccepted, res[0].Class)
	require.Equal(t, "CONVERSION_ALREADY_RETRACTED", res[0].Reason)
	// Retracting something never uploaded.
	retraction[0].RetractsKey = "k-never"
	res, err = send(t, ads, retraction)
	require.NoError(t, err)
	require.Equal(t, uploader.ClassPermanent, res[0].Class)
	require.Equal(t, "CONVERSION_NOT_FOUND", res[0].Reason)

	c := e.sb.Counts()[google.AdsName]
	require.Equal(t, 2, c.AcceptedUnique)
	require.Equal(t, 1, c.Duplicates)
	require.Equal(t, 1, c.Retracted)
}

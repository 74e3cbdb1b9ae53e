package google_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
	"github.com/closedloop/closedloop/uploader/google"
	"github.com/closedloop/closedloop/uploader/sandbox"
	"github.com/closedloop/closedloop/uploader/sandbox/schema"
)

// restatementOf is a restatement of orig (accepted) to v EUR a few days later.
func restatementOf(orig store.Conversion, v float64) store.Conversion {
	orig.State = store.StateAccepted
	return store.Conversion{Key: orig.Key + "-restate", Kind: store.KindRestatement, RetractsKey: orig.Key,
		ConversionName: orig.ConversionName, OccurredAt: orig.OccurredAt.Add(72 * time.Hour), Value: &v, Currency: "EUR", Adjusted: &orig}
}

func TestAdsRestatementBody(t *testing.T) {
	t.Parallel()
	ads := google.NewAdsAPI(baseConfig("google_ads", "http://unused"), nil, zaptest.NewLogger(t))
	r := restatementOf(rows(t)[0], 9000)
	require.Nil(t, ads.Check(&r, r.OccurredAt))
	ret := store.Conversion{Key: "k-deal-1-lost", Kind: store.KindRetraction, RetractsKey: "k-deal-1-won", ConversionName: "987654321",
		OccurredAt: r.OccurredAt.Add(time.Hour)}
	require.Equal(t, ads.BatchGroup(&r), ads.BatchGroup(&ret), "restatements and retractions share the adjustments endpoint")
	method, body, err := ads.Body([]store.Conversion{r, ret})
	require.NoError(t, err)
	require.Equal(t, "uploadConversionAdjustments", method)
	golden(t, "google_ads_upload_conversion_adjustments_restatement.json", schema.GoogleAds, "UploadConversionAdjustmentsRequest", body)

	bad := r
	bad.Value = nil
	e := ads.Check(&bad, r.OccurredAt)
	require.NotNil(t, e)
	require.Equal(t, uploader.ClassPermanent, e.Class)
	require.Equal(t, "missing_value", e.Reason)
}

func TestDataManagerRestatementResendsTheEvent(t *testing.T) {
	t.Parallel()
	dm := google.NewDataManager(baseConfig("google", "http://unused"), nil, zaptest.NewLogger(t))
	orig := rows(t)[0]
	r := restatementOf(orig, 9000)
	require.Nil(t, dm.Check(&r, r.OccurredAt))
	body, err := dm.Body([]store.Conversion{r})
	require.NoError(t, err)
	golden(t, "google_datamanager_ingest_restatement.json", schema.GoogleDataManager, "IngestEventsRequest", body)
	first, err := dm.Body([]store.Conversion{orig})
	require.NoError(t, err)
	var a, b struct {
		Events []map[string]any `json:"events"`
	}
	require.NoError(t, json.Unmarshal(first, &a))
	require.NoError(t, json.Unmarshal(body, &b))
	require.Equal(t, 9000.0, b.Events[0]["conversionValue"])
	b.Events[0]["conversionValue"] = a.Events[0]["conversionValue"]
	require.Equal(t, a.Events[0], b.Events[0], "the same event (transactionId, time, identifiers) with the new value")

	ret := store.Conversion{Key: "k-lost", Kind: store.KindRetraction, RetractsKey: orig.Key, ConversionName: "987654321", OccurredAt: r.OccurredAt}
	e := dm.Check(&ret, r.OccurredAt)
	require.NotNil(t, e)
	require.Equal(t, store.ReasonRetractionUnsupported, e.Reason)
}

// TestAdjustmentsRoundTrip: the sandbox applies each restatement once (a resend is a
// duplicate it ignores), refuses a restatement of a retracted conversion, and counts Data
// Manager's resent transactionId with a new value as a restatement.
func TestAdjustmentsRoundTrip(t *testing.T) {
	t.Parallel()
	e := setup(t, sandbox.Options{})
	ads := google.NewAdsAPI(baseConfig("google_ads", e.url), nil, zaptest.NewLogger(t))
	orig := rows(t)[:1]
	res, err := send(t, ads, orig)
	require.NoError(t, err)
	require.Equal(t, uploader.ClassAccepted, res[0].Class)
	r := restatementOf(orig[0], 9000)
	for range 2 {
		res, err = send(t, ads, []store.Conversion{r})
		require.NoError(t, err)
		require.Equal(t, uploader.ClassAccepted, res[0].Class)
	}
	require.Equal(t, "RESTATEMENT_ALREADY_EXISTS", res[0].Reason, "the resend is ignored")
	ret := store.Conversion{Key: "k-lost", Kind: store.KindRetraction, RetractsKey: orig[0].Key, ConversionName: "987654321", OccurredAt: r.OccurredAt.Add(time.Hour)}
	_, err = send(t, ads, []store.Conversion{ret})
	require.NoError(t, err)
	later := restatementOf(orig[0], 1)
	later.OccurredAt = ret.OccurredAt.Add(time.Hour)
	res, err = send(t, ads, []store.Conversion{later})
	require.NoError(t, err)
	require.Equal(t, "CONVERSION_ALREADY_RETRACTED", res[0].Reason)
	c := e.sb.Counts()[google.AdsName]
	require.Equal(t, 1, c.AcceptedUnique)
	require.Equal(t, 1, c.Restated)
	require.Equal(t, 1, c.Retracted)
	require.Equal(t, 1, c.AdjustmentDuplicates)

	dm := google.NewDataManager(baseConfig("google", e.url), nil, zaptest.NewLogger(t))
	_, err = send(t, dm, orig)
	require.NoError(t, err)
	for range 2 {
		_, err = send(t, dm, []store.Conversion{restatementOf(orig[0], 9000)})
		require.NoError(t, err)
	}
	c = e.sb.Counts()[google.DataManagerName]
	require.Equal(t, 1, c.AcceptedUnique)
	require.Equal(t, 1, c.Restated)
	require.Equal(t, 1, c.Duplicates, "the same value resent is a duplicate")
}

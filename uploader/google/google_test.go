package google_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
	"github.com/closedloop/closedloop/uploader/google"
	"github.com/closedloop/closedloop/uploader/platforms"
	"github.com/closedloop/closedloop/uploader/sandbox"
	"github.com/closedloop/closedloop/uploader/sandbox/schema"
)

var update = flag.Bool("update", false, "rewrite golden request bodies under testdata/requests")

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// now is the fixed upload time of every test.
var now = time.Date(2026, 10, 20, 12, 0, 0, 0, time.UTC)

func ids(t *testing.T, email, phone string) pii.Set {
	t.Helper()
	n := pii.Normalizer{DefaultRegion: "US"}
	s := pii.Set{}
	if email != "" {
		require.NoError(t, n.Add(s, pii.Email, email))
	}
	if phone != "" {
		require.NoError(t, n.Add(s, pii.Phone, phone))
	}
	return s
}

func value(v float64) *float64 { return &v }

// rows are three conversions: a gclid with email, phone and consent; both braids (gbraid
// wins) with no consent answer; an email-only enhanced conversion for leads.
func rows(t *testing.T) []store.Conversion {
	return []store.Conversion{
		{
			Key: "k-deal-1-won", Kind: store.KindConversion, ConversionName: "987654321", Source: "hubspot",
			OccurredAt: time.Date(2026, 10, 14, 13, 2, 11, 0, time.UTC), Value: value(12500), Currency: "EUR",
			Identity: store.Identity{
				Clicks:      []store.Click{{Type: "gclid", ID: "Cj0KCQjw-test-gclid", At: time.Date(2026, 9, 30, 8, 0, 0, 0, time.UTC)}},
				Identifiers: ids(t, "Pat.Example+crm@gmail.com", "+1 (800) 555-0100"),
				Consent:     store.Consent{AdUserData: store.ConsentGranted, AdPersonalization: store.ConsentDenied},
			},
		},
		{
			Key: "k-deal-2-won", Kind: store.KindConversion, ConversionName: "987654321", Source: "hubspot",
			OccurredAt: time.Date(2026, 10, 15, 9, 30, 0, 0, time.UTC),
			Identity: store.Identity{
				Clicks: []store.Click{
					{Type: "wbraid", ID: "wbraid-test", At: time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)},
					{Type: "gbraid", ID: "gbraid-test", At: time.Date(2026, 10, 2, 0, 0, 0, 0, time.UTC)},
				},
				Consent: store.Consent{AdUserData: store.ConsentUnknown},
			},
		},
		{
			Key: "k-deal-3-won", Kind: store.KindConversion, ConversionName: "987654321", Source: "salesforce",
			OccurredAt: time.Date(2026, 10, 16, 17, 45, 0, 0, time.UTC), Value: value(99.5), Currency: "USD",
			Identity: store.Identity{Identifiers: ids(t, "someone@example.org", "")},
		},
	}
}

func baseConfig(platform, url string) uploader.DestinationConfig {
	spec := google.DataManagerSpec()
	if platform == "google_ads" {
		spec = google.AdsSpec()
	}
	return uploader.DestinationConfig{
		Platform: platform, BaseURL: url, Timeout: 5 * time.Second,
		Settings: &google.Settings{
			TokenURL: url + "/token", CustomerID: "1234567890", LoginCustomerID: "9876543210",
			ClientID: "client-id", ClientSecret: "client-secret", RefreshToken: "refresh-token",
		},
	}.WithDefaults(spec)
}

// settings is cfg's Google section.
func settings(cfg uploader.DestinationConfig) *google.Settings {
	return cfg.Settings.(*google.Settings)
}

type env struct {
	sb  *sandbox.Server
	url string
}

func setup(t *testing.T, opts sandbox.Options) env {
	t.Helper()
	if opts.Now == nil {
		opts.Now = func() time.Time { return now }
	}
	opts.RefreshToken = "refresh-token"
	sb := platforms.NewSandbox(opts, zaptest.NewLogger(t))
	srv := httptest.NewServer(sb)
	t.Cleanup(srv.Close)
	return env{sb: sb, url: srv.URL}
}

func send(t *testing.T, p uploader.Platform, batch []store.Conversion) ([]uploader.RowResult, error) {
	t.Helper()
	req, err := p.BuildRequest(context.Background(), batch, now)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return p.ParseResponse(resp, body, batch)
}

// golden compares body with testdata/requests/name (indented) and checks it against the
// schema facts in testdata/schemas.
func golden(t *testing.T, name, schemaName, root string, body []byte) {
	t.Helper()
	s := loadTestdataSchema(t, schemaName)
	require.Empty(t, s.ValidateJSON(root, body), "body must fit %s %s", schemaName, root)
	var pretty bytes.Buffer
	require.NoError(t, json.Indent(&pretty, body, "", "  "))
	pretty.WriteByte('\n')
	path := filepath.Join("..", "..", "testdata", "requests", name)
	if *update {
		require.NoError(t, os.WriteFile(path, pretty.Bytes(), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update to create %s", path)
	require.Equal(t, string(want), pretty.String())
}

// loadTestdataSchema checks the repository's copy of the facts equals the embedded one.
func loadTestdataSchema(t *testing.T, name string) *schema.Schema {
	t.Helper()
	_, err := os.ReadFile(filepath.Join("..", "..", "testdata", "schemas", name+".json"))
	require.NoError(t, err)
	s, err := schema.Load(name)
	require.NoError(t, err)
	return s
}

func TestDataManagerGoldenBody(t *testing.T) {
	t.Parallel()
	dm := google.NewDataManager(baseConfig("google", "http://unused"), nil, zaptest.NewLogger(t))
	body, err := dm.Body(rows(t))
	require.NoError(t, err)
	golden(t, "google_datamanager_ingest.json", schema.GoogleDataManager, "IngestEventsRequest", body)

	var got map[string]any
	require.NoError(t, json.Unmarshal(body, &got))
	events := got["events"].([]any)
	second := events[1].(map[string]any)["adIdentifiers"].(map[string]any)
	require.Equal(t, map[string]any{"gbraid": "gbraid-test"}, second, "gbraid wins over wbraid, never both")
	first := events[0].(map[string]any)
	require.Equal(t, "2026-10-14T13:02:11Z", first["eventTimestamp"])
	require.Equal(t, map[string]any{"adUserData": "CONSENT_GRANTED", "adPersonalization": "CONSENT_DENIED"}, first["consent"])
	require.NotContains(t, events[1].(map[string]any), "consent", "unknown consent is omitted")
}

func TestDataManagerMultipleActions(t *testing.T) {
	t.Parallel()
	dm := google.NewDataManager(baseConfig("google", "http://unused"), nil, zaptest.NewLogger(t))
	batch := rows(t)
	batch[2].ConversionName = "111222333"
	body, err := dm.Body(batch)
	require.NoError(t, err)
	s := loadTestdataSchema(t, schema.GoogleDataManager)
	require.Empty(t, s.ValidateJSON("", body))
	var got struct {
		Destinations []struct {
			Reference            string `json:"reference"`
			ProductDestinationID string `json:"productDestinationId"`
		} `json:"destinations"`
		Events []struct {
			DestinationReferences []string `json:"destinationReferences"`
		} `json:"events"`
	}
	require.NoError(t, json.Unmarshal(body, &got))
	require.Len(t, got.Destinations, 2)
	require.Equal(t, []string{"action-111222333"}, got.Events[2].DestinationReferences)
	require.Equal(t, []string{"action-987654321"}, got.Events[0].DestinationReferences)
}

func TestAdsGoldenBodies(t *testing.T) {
	t.Parallel()
	ads := google.NewAdsAPI(baseConfig("google_ads", "http://unused"), nil, zaptest.NewLogger(t))
	method, body, err := ads.Body(rows(t))
	require.NoError(t, err)
	require.Equal(t, "uploadClickConversions", method)
	golden(t, "google_ads_upload_click_conversions.json", schema.GoogleAds, "UploadClickConversionsRequest", body)

	retraction := []store.Conversion{{
		Key: "k-deal-1-lost", Kind: store.KindRetraction, RetractsKey: "k-deal-1-won", ConversionName: "987654321",
		OccurredAt: time.Date(2026, 10, 18, 10, 0, 0, 0, time.UTC),
	}}
	method, body, err = ads.Body(retraction)
	require.NoError(t, err)
	require.Equal(t, "uploadConversionAdjustments", method)
	golden(t, "google_ads_upload_conversion_adjustments.json", schema.GoogleAds, "UploadConversionAdjustmentsRequest", body)

	_, _, err = ads.Body(append(rows(t), retraction...))
	require.Error(t, err, "a batch mixing conversions and retractions is refused")
}

func TestCheck(t *testing.T) {
	t.Parallel()
	base := func() store.Conversion { return rows(t)[0] }
	cases := []struct {
		name   string
		mutate func(c *store.Conversion)
		class  uploader.Class
		reason string
	}{
		{"ok", func(c *store.Conversion) {}, "", ""},
		{"consent denied", func(c *store.Conversion) { c.Identity.Consent.AdUserData = store.ConsentDenied }, uploader.ClassSkipped, "consent_denied"},
		{"no identifier", func(c *store.Conversion) { c.Identity.Clicks = nil; c.Identity.Identifiers = nil }, uploader.ClassPermanent, "no_identifier"},
		{"email only is enough", func(c *store.Conversion) { c.Identity.Clicks = nil }, "", ""},
		{"click older than the window", func(c *store.Conversion) {
			c.Identity.Clicks[0].At = c.OccurredAt.Add(-91 * 24 * time.Hour)
		}, uploader.ClassExpired, "click_window_exceeded"},
		{"window is click to conversion, not to upload", func(c *store.Conversion) {
			c.Identity.Clicks[0].At = c.OccurredAt.Add(-89 * 24 * time.Hour)
		}, "", ""},
		{"conversion before click", func(c *store.Conversion) {
			c.Identity.Clicks[0].At = c.OccurredAt.Add(time.Hour)
		}, uploader.ClassPermanent, "conversion_precedes_click"},
		{"click under 6h old", func(c *store.Conversion) {
			c.Identity.Clicks[0].At = now.Add(-2 * time.Hour)
			c.OccurredAt = now.Add(-time.Hour)
		}, uploader.ClassTransient, "click_too_recent"},
		{"non-numeric action", func(c *store.Conversion) { c.ConversionName = "Closed Won" }, uploader.ClassPermanent, "invalid_conversion_action"},
		{"bad currency", func(c *store.Conversion) { c.Currency = "euro" }, uploader.ClassPermanent, "invalid_currency"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, p := range []uploader.Platform{
				google.NewDataManager(baseConfig("google", "http://unused"), nil, zaptest.NewLogger(t)),
				google.NewAdsAPI(baseConfig("google_ads", "http://unused"), nil, zaptest.NewLogger(t)),
			} {
				c := base()
				tc.mutate(&c)
				got := p.Check(&c, now)
				if tc.class == "" {
					require.Nil(t, got)
					continue
				}
				require.NotNil(t, got)
				require.Equal(t, tc.class, got.Class)
				require.Equal(t, tc.reason, got.Reason)
				if tc.class == uploader.ClassTransient {
					require.Equal(t, 4*time.Hour, got.RetryAfter, "the click is 2h old")
				}
			}
		})
	}
	t.Run("click window from config", func(t *testing.T) {
		t.Parallel()
		cfg := baseConfig("google", "http://unused")
		settings(cfg).ClickWindow = 30 * 24 * time.Hour
		c := base() // click 14 days before the conversion
		c.Identity.Clicks[0].At = c.OccurredAt.Add(-31 * 24 * time.Hour)
		got := google.NewDataManager(cfg, nil, zaptest.NewLogger(t)).Check(&c, now)
		require.Equal(t, uploader.ClassExpired, got.Class)
	})
	t.Run("retractions", func(t *testing.T) {
		t.Parallel()
		r := store.Conversion{Kind: store.KindRetraction, RetractsKey: "k", ConversionName: "987654321", OccurredAt: now}
		dm := google.NewDataManager(baseConfig("google", "http://unused"), nil, zaptest.NewLogger(t))
		got := dm.Check(&r, now)
		require.Equal(t, uploader.ClassSkipped, got.Class)
		require.Equal(t, "retraction_unsupported", got.Reason)
		ads := google.NewAdsAPI(baseConfig("google_ads", "http://unused"), nil, zaptest.NewLogger(t))
		require.Nil(t, ads.Check(&r, now))
		r.RetractsKey = ""
		require.Equal(t, "missing_retracts_key", ads.Check(&r, now).Reason)
	})
}

func TestAdsErrorClass(t *testing.T) {
	t.Parallel()
	cases := []struct {
		typ, enum string
		class     uploader.Class
		wait      time.Duration
	}{
		{"conversionUploadError", "TOO_RECENT_EVENT", uploader.ClassTransient, 6 * time.Hour},
		{"conversionUploadError", "TOO_RECENT_CONVERSION_ACTION", uploader.ClassTransient, 6 * time.Hour},
		{"conversionUploadError", "TOO_RECENT_CALL", uploader.ClassTransient, 12 * time.Hour},
		{"conversionAdjustmentUploadError", "TOO_RECENT_CONVERSION", uploader.ClassTransient, 24 * time.Hour},
		{"databaseError", "CONCURRENT_MODIFICATION", uploader.ClassTransient, 0},
		{"internalError", "SOMETHING_NEW", uploader.ClassTransient, 0},
		{"quotaError", "RESOURCE_TEMPORARILY_EXHAUSTED", uploader.ClassTransient, time.Minute},
		{"quotaError", "RESOURCE_EXHAUSTED", uploader.ClassSetup, 0},
		{"conversionUploadError", "UNPARSEABLE_GCLID", uploader.ClassPermanent, 0},
		{"conversionUploadError", "UNPARSEABLE_GBRAID", uploader.ClassPermanent, 0},
		{"conversionUploadError", "UNPARSEABLE_WBRAID", uploader.ClassPermanent, 0},
		{"conversionUploadError", "GBRAID_WBRAID_BOTH_SET", uploader.ClassPermanent, 0},
		{"conversionUploadError", "EXPIRED_EVENT", uploader.ClassPermanent, 0},
		{"conversionUploadError", "CONVERSION_PRECEDES_EVENT", uploader.ClassPermanent, 0},
		{"conversionUploadError", "EVENT_NOT_FOUND", uploader.ClassPermanent, 0},
		{"conversionUploadError", "CLICK_NOT_FOUND", uploader.ClassPermanent, 0},
		{"conversionUploadError", "INVALID_CUSTOMER_FOR_CLICK", uploader.ClassPermanent, 0},
		{"conversionUploadError", "INVALID_USER_IDENTIFIER", uploader.ClassPermanent, 0},
		{"conversionUploadError", "UNSUPPORTED_USER_IDENTIFIER", uploader.ClassPermanent, 0},
		{"conversionUploadError", "ORDER_ID_CONTAINS_PII", uploader.ClassPermanent, 0},
		{"conversionUploadError", "CUSTOM_VARIABLE_VALUE_CONTAINS_PII", uploader.ClassPermanent, 0},
		{"conversionUploadError", "DUPLICATE_ORDER_ID", uploader.ClassPermanent, 0},
		{"conversionUploadError", "DUPLICATE_CLICK_CONVERSION_IN_REQUEST", uploader.ClassPermanent, 0},
		{"conversionUploadError", "INVALID_JOB_ID", uploader.ClassPermanent, 0},
		{"conversionAdjustmentUploadError", "CONVERSION_NOT_FOUND", uploader.ClassPermanent, 0},
		{"conversionAdjustmentUploadError", "CONVERSION_EXPIRED", uploader.ClassPermanent, 0},
		{"conversionAdjustmentUploadError", "ADJUSTMENT_PRECEDES_CONVERSION", uploader.ClassPermanent, 0},
		{"conversionAdjustmentUploadError", "TOO_MANY_ADJUSTMENTS", uploader.ClassPermanent, 0},
		{"conversionAdjustmentUploadError", "GCLID_DATE_TIME_PAIR_AND_ORDER_ID_BOTH_SET", uploader.ClassPermanent, 0},
		{"conversionAdjustmentUploadError", "MISSING_ORDER_ID_FOR_WEBPAGE", uploader.ClassPermanent, 0},
		{"conversionAdjustmentUploadError", "DUPLICATE_ADJUSTMENT_IN_REQUEST", uploader.ClassPermanent, 0},
		{"conversionAdjustmentUploadError", "DUPLICATE_ENHANCEMENT_IN_REQUEST", uploader.ClassPermanent, 0},
		{"conversionAdjustmentUploadError", "CANNOT_RESTATE_CONVERSION_ACTION_THAT_ALWAYS_USES_DEFAULT_CONVERSION_VALUE", uploader.ClassPermanent, 0},
		{"conversionUploadError", "CLICK_CONVERSION_ALREADY_EXISTS", uploader.ClassAccepted, 0},
		{"conversionUploadError", "ORDER_ID_ALREADY_IN_USE", uploader.ClassAccepted, 0},
		{"conversionAdjustmentUploadError", "CONVERSION_ALREADY_RETRACTED", uploader.ClassAccepted, 0},
		{"conversionAdjustmentUploadError", "RESTATEMENT_ALREADY_EXISTS", uploader.ClassAccepted, 0},
		{"conversionAdjustmentUploadError", "CONVERSION_ALREADY_ENHANCED", uploader.ClassAccepted, 0},
		{"conversionAdjustmentUploadError", "MORE_RECENT_RESTATEMENT_FOUND", uploader.ClassAccepted, 0},
		{"conversionUploadError", "NO_CONVERSION_ACTION_FOUND", uploader.ClassHeld, 0},
		{"conversionUploadError", "INVALID_CONVERSION_ACTION_TYPE", uploader.ClassHeld, 0},
		{"conversionUploadError", "CUSTOMER_NOT_ACCEPTED_CUSTOMER_DATA_TERMS", uploader.ClassSetup, 0},
		{"conversionUploadError", "CUSTOMER_NOT_ENABLED_ENHANCED_CONVERSIONS_FOR_LEADS", uploader.ClassSetup, 0},
		{"conversionUploadError", "CUSTOMER_DATA_POLICY_PROHIBITS_ENHANCED_CONVERSIONS", uploader.ClassSetup, 0},
		{"conversionUploadError", "CONVERSION_TRACKING_NOT_ENABLED_AT_IMPRESSION_TIME", uploader.ClassSetup, 0},
		{"conversionUploadError", "UNAUTHORIZED_CUSTOMER", uploader.ClassSetup, 0},
		{"notAllowlistedError", "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE", uploader.ClassSetup, 0},
		{"authenticationError", "OAUTH_TOKEN_EXPIRED", uploader.ClassSetup, 0},
		{"authorizationError", "USER_PERMISSION_DENIED", uploader.ClassSetup, 0},
		{"conversionUploadError", "A_FUTURE_ENUM", uploader.ClassUnknown, 0},
	}
	for _, tc := range cases {
		class, wait := google.AdsErrorClass(tc.typ, tc.enum)
		require.Equal(t, tc.class, class, tc.enum)
		require.Equal(t, tc.wait, wait, tc.enum)
	}
}

func TestDataManagerHTTPStatusClasses(t *testing.T) {
	t.Parallel()
	cases := []struct {
		status int
		reason string
		want   uploader.Class
	}{
		{400, "INVALID_SHA256_FORMAT", uploader.ClassBatchRejected},
		{400, "INVALID_ARGUMENT", uploader.ClassBatchRejected},
		{400, "INVALID_DESTINATION", uploader.ClassSetup},
		{400, "TOO_MANY_DESTINATIONS", uploader.ClassSetup},
		{403, "PERMISSION_DENIED", uploader.ClassSetup},
		{404, "NOT_FOUND", uploader.ClassSetup},
		{429, "RESOURCE_EXHAUSTED", uploader.ClassTransient},
		{500, "INTERNAL_ERROR", uploader.ClassTransient},
		{503, "UNAVAILABLE", uploader.ClassTransient},
		{504, "DEADLINE_EXCEEDED", uploader.ClassTransient},
	}
	dm := google.NewDataManager(baseConfig("google", "http://unused"), nil, zaptest.NewLogger(t))
	for _, tc := range cases {
		body, _ := json.Marshal(map[string]any{"error": map[string]any{"code": tc.status, "message": "m", "status": "X",
			"details": []any{map[string]any{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": tc.reason}}}})
		resp := &http.Response{StatusCode: tc.status, Header: http.Header{"Retry-After": {"7"}}}
		_, err := dm.ParseResponse(resp, body, rows(t))
		require.Error(t, err)
		var e *uploader.Error
		require.True(t, errors.As(err, &e), "%d %s: %v", tc.status, tc.reason, err)
		require.Equal(t, tc.want, e.Class, "%d %s: %v", tc.status, tc.reason, err)
		if tc.want != uploader.ClassTransient {
			require.Equal(t, tc.reason, e.Reason)
		} else {
			require.Equal(t, 7*time.Second, e.RetryAfter)
		}
	}
}

package meta_test

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
	"github.com/closedloop/closedloop/uploader/meta"
	"github.com/closedloop/closedloop/uploader/platforms"
	"github.com/closedloop/closedloop/uploader/sandbox"
	"github.com/closedloop/closedloop/uploader/sandbox/schema"
	"github.com/closedloop/closedloop/uploader/tiktok"
)

var update = flag.Bool("update", false, "rewrite golden request bodies under testdata/requests")

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var now = time.Date(2026, 10, 20, 12, 0, 0, 0, time.UTC)

func value(v float64) *float64 { return &v }

func rows(t *testing.T) []store.Conversion {
	t.Helper()
	n := pii.Normalizer{DefaultRegion: "US"}
	a := pii.Set{}
	require.NoError(t, n.Add(a, pii.Email, " Pat.Example@Example.com "))
	require.NoError(t, n.Add(a, pii.Phone, "(650)555-1212"))
	require.NoError(t, n.Add(a, pii.FirstName, "Pat"))
	b := pii.Set{}
	require.NoError(t, n.Add(b, pii.Email, "lead.person@example.net"))
	return []store.Conversion{
		{
			Key: "k-deal-1-won", Kind: store.KindConversion, ConversionName: "Closed Won", Source: "hubspot",
			OccurredAt: time.Date(2026, 10, 18, 9, 0, 0, 0, time.UTC), Value: value(12500), Currency: "EUR",
			Identity: store.Identity{Identifiers: a, Clicks: []store.Click{
				{Type: "fbclid", ID: "IwAR-test-fbclid", At: time.Date(2026, 10, 1, 10, 0, 0, 0, time.UTC)},
				{Type: "fbp", ID: "fb.1.1759312800000.1234567890"},
			}},
		},
		{
			Key: "k-lead-7-sql", Kind: store.KindConversion, ConversionName: "Sales Accepted", Source: "salesforce",
			OccurredAt: time.Date(2026, 10, 19, 15, 30, 0, 0, time.UTC),
			Identity:   store.Identity{Identifiers: b, LeadID: "1234567890123456"},
		},
	}
}

func config(url string) uploader.DestinationConfig {
	return uploader.DestinationConfig{Platform: "meta", BaseURL: url, Settings: &meta.Settings{DatasetID: "555000111",
		AccessToken: "meta-test-token", LeadEventSource: "Salesforce"}}.WithDefaults(meta.Spec())
}

func TestGoldenBody(t *testing.T) {
	t.Parallel()
	p := meta.New(config("http://unused"), zaptest.NewLogger(t))
	body, err := p.Body(rows(t))
	require.NoError(t, err)
	s, err := schema.Load(schema.Meta)
	require.NoError(t, err)
	require.Empty(t, s.ValidateJSON("EventRequest", body))
	var pretty bytes.Buffer
	require.NoError(t, json.Indent(&pretty, body, "", "  "))
	pretty.WriteByte('\n')
	path := filepath.Join("..", "..", "testdata", "requests", "meta_events.json")
	if *update {
		require.NoError(t, os.WriteFile(path, pretty.Bytes(), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, string(want), pretty.String())

	var got struct {
		Data []map[string]any `json:"data"`
	}
	require.NoError(t, json.Unmarshal(body, &got))
	ud := got.Data[0]["user_data"].(map[string]any)
	require.Equal(t, []any{"e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"}, ud["ph"], "digits form, Meta's worked example")
	require.Equal(t, "fb.1.1790848800000.IwAR-test-fbclid", ud["fbc"], "fb.1.<click time ms>.<fbclid>")
	require.NotContains(t, got.Data[0]["custom_data"], "event_source", "no CRM payload without a Meta lead id")
	lead := got.Data[1]["user_data"].(map[string]any)
	require.Equal(t, float64(1234567890123456), lead["lead_id"], "lead_id is an integer")
	require.Equal(t, map[string]any{"event_source": "crm", "lead_event_source": "Salesforce"}, got.Data[1]["custom_data"])
}

func TestCheck(t *testing.T) {
	t.Parallel()
	p := meta.New(config("http://unused"), zaptest.NewLogger(t))
	cases := []struct {
		name   string
		mutate func(c *store.Conversion)
		class  uploader.Class
		reason string
	}{
		{"ok", func(*store.Conversion) {}, "", ""},
		{"six days old", func(c *store.Conversion) { c.OccurredAt = now.Add(-6 * 24 * time.Hour) }, "", ""},
		{"older than 7 days before upload", func(c *store.Conversion) { c.OccurredAt = now.Add(-7*24*time.Hour - time.Minute) }, uploader.ClassExpired, "event_too_old"},
		{"retraction", func(c *store.Conversion) { c.Kind = store.KindRetraction }, uploader.ClassSkipped, "retraction_unsupported"},
		{"consent denied", func(c *store.Conversion) { c.Identity.Consent.AdUserData = store.ConsentDenied }, uploader.ClassSkipped, "consent_denied"},
		{"no identifier", func(c *store.Conversion) { c.Identity = store.Identity{} }, uploader.ClassPermanent, "no_identifier"},
		{"fbp alone is enough", func(c *store.Conversion) {
			c.Identity = store.Identity{Clicks: []store.Click{{Type: "fbp", ID: "fb.1.1.2"}}}
		}, "", ""},
		{"bad currency", func(c *store.Conversion) { c.Currency = "" }, uploader.ClassPermanent, "invalid_currency"},
	}
	for _, tc := range cases {
		c := rows(t)[0]
		tc.mutate(&c)
		got := p.Check(&c, now)
		if tc.class == "" {
			require.Nil(t, got, tc.name)
			continue
		}
		require.NotNil(t, got, tc.name)
		require.Equal(t, tc.class, got.Class, tc.name)
		require.Equal(t, tc.reason, got.Reason, tc.name)
	}
}

func TestErrorClass(t *testing.T) {
	t.Parallel()
	cases := []struct {
		code, subcode int
		transient     bool
		status        int
		class         uploader.Class
	}{
		{190, 0, false, 400, uploader.ClassSetup},
		{190, 463, false, 400, uploader.ClassSetup},
		{102, 0, false, 400, uploader.ClassSetup},
		{104, 0, false, 400, uploader.ClassSetup},
		{10, 0, false, 403, uploader.ClassSetup},
		{200, 0, false, 403, uploader.ClassSetup},
		{294, 0, false, 403, uploader.ClassSetup},
		{3, 0, false, 400, uploader.ClassSetup},
		{100, 33, false, 400, uploader.ClassSetup},
		{4, 0, true, 400, uploader.ClassTransient},
		{17, 0, false, 400, uploader.ClassTransient},
		{32, 0, false, 400, uploader.ClassTransient},
		{613, 0, false, 400, uploader.ClassTransient},
		{80003, 0, false, 400, uploader.ClassTransient},
		{341, 0, false, 400, uploader.ClassTransient},
		{368, 0, false, 400, uploader.ClassTransient},
		{1, 0, false, 500, uploader.ClassTransient},
		{2, 0, true, 500, uploader.ClassTransient},
		{5000, 0, false, 500, uploader.ClassTransient},
		{100, 2804003, false, 400, uploader.ClassPermanent},
		{100, 2804001, false, 400, uploader.ClassPermanent},
		{100, 2804007, false, 400, uploader.ClassPermanent},
		{100, 2804016, false, 400, uploader.ClassPermanent},
		{100, 2804017, false, 400, uploader.ClassPermanent},
		{100, 2804019, false, 400, uploader.ClassPermanent},
		{100, 2804048, false, 400, uploader.ClassPermanent},
		{100, 0, false, 400, uploader.ClassPermanent},
		{12345, 0, true, 400, uploader.ClassTransient},
		{12345, 0, false, 503, uploader.ClassTransient},
		{12345, 0, false, 401, uploader.ClassSetup},
		{12345, 0, false, 400, uploader.ClassUnknown}, // never rejects a row
	}
	for _, tc := range cases {
		class, _ := meta.ErrorClass(tc.code, tc.subcode, tc.transient, tc.status)
		require.Equal(t, tc.class, class, "code %d/%d", tc.code, tc.subcode)
	}
}

func setup(t *testing.T, opts sandbox.Options) (*sandbox.Server, *meta.Platform) {
	t.Helper()
	opts.Now = func() time.Time { return now }
	opts.Platforms = map[string]sandbox.PlatformOptions{meta.Name: {AccessToken: "meta-test-token"}}
	sb := platforms.NewSandbox(opts, zaptest.NewLogger(t))
	srv := httptest.NewServer(sb)
	t.Cleanup(srv.Close)
	return sb, meta.New(config(srv.URL), zaptest.NewLogger(t))
}

func send(t *testing.T, p uploader.Platform, batch []store.Conversion) ([]uploader.RowResult, error) {
	t.Helper()
	req, err := p.BuildRequest(context.Background(), batch, now)
	require.NoError(t, err)
	require.NotContains(t, req.URL.String(), "meta-test-token", "the token never goes in the URL")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return p.ParseResponse(resp, body, batch)
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	sb, p := setup(t, sandbox.Options{})
	res, err := send(t, p, rows(t))
	require.NoError(t, err)
	for _, r := range res {
		require.Equal(t, uploader.ClassAccepted, r.Class)
	}
	_, err = send(t, p, rows(t))
	require.NoError(t, err)
	c := sb.Counts()[meta.Name]
	require.Equal(t, 4, c.Received)
	require.Equal(t, 2, c.AcceptedUnique, "event_id + event_name dedup within 48h")
	require.Equal(t, 2, c.Duplicates)
}

func TestSandboxRejections(t *testing.T) {
	t.Parallel()
	t.Run("an event older than 7 days rejects the whole request", func(t *testing.T) {
		t.Parallel()
		_, p := setup(t, sandbox.Options{})
		batch := rows(t)
		batch[1].OccurredAt = now.Add(-8 * 24 * time.Hour) // as if Check had been skipped
		_, err := send(t, p, batch)
		var br *uploader.Error
		require.True(t, errors.As(err, &br), "%v", err)
		require.Equal(t, uploader.ClassBatchRejected, br.Class, "%v", err)
		require.Equal(t, "100/2804003", br.Reason)
	})
	t.Run("reject marker", func(t *testing.T) {
		t.Parallel()
		_, p := setup(t, sandbox.Options{})
		batch := rows(t)
		batch[0].ConversionName = sandbox.DefaultRejectMarker
		_, err := send(t, p, batch)
		var br *uploader.Error
		require.True(t, errors.As(err, &br), "%v", err)
		require.Equal(t, uploader.ClassBatchRejected, br.Class, "%v", err)
	})
	t.Run("bad token", func(t *testing.T) {
		t.Parallel()
		sb := platforms.NewSandbox(sandbox.Options{Now: func() time.Time { return now }, Platforms: map[string]sandbox.PlatformOptions{meta.Name: {AccessToken: "other"}}}, zaptest.NewLogger(t))
		srv := httptest.NewServer(sb)
		defer srv.Close()
		_, err := send(t, meta.New(config(srv.URL), zaptest.NewLogger(t)), rows(t))
		var se *uploader.Error
		require.True(t, errors.As(err, &se), "%v", err)
		require.Equal(t, uploader.ClassSetup, se.Class, "%v", err)
		require.Equal(t, "190", se.Reason)
	})
}

func TestFaults(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		faults sandbox.Faults
		check  func(t *testing.T, err error)
	}{
		{"5xx", sandbox.Faults{Share5xx: 1}, func(t *testing.T, err error) {
			var te *uploader.Error
			require.True(t, errors.As(err, &te), "%v", err)
			require.Equal(t, uploader.ClassTransient, te.Class, "%v", err)
		}},
		{"429", sandbox.Faults{Share429: 1, RetryAfterSeconds: 9}, func(t *testing.T, err error) {
			var te *uploader.Error
			require.True(t, errors.As(err, &te), "%v", err)
			require.Equal(t, uploader.ClassTransient, te.Class, "%v", err)
			require.Equal(t, 9*time.Second, te.RetryAfter)
		}},
		{"expired token window", sandbox.Faults{ExpiredToken: true}, func(t *testing.T, err error) {
			var se *uploader.Error
			require.True(t, errors.As(err, &se), "%v", err)
			require.Equal(t, uploader.ClassSetup, se.Class, "%v", err)
			require.Equal(t, "190/463", se.Reason)
		}},
		{"whole batch", sandbox.Faults{ShareBatchReject: 1}, func(t *testing.T, err error) {
			var br *uploader.Error
			require.True(t, errors.As(err, &br), "%v", err)
			require.Equal(t, uploader.ClassBatchRejected, br.Class, "%v", err)
		}},
		{"faults scoped to another platform", sandbox.Faults{Share5xx: 1, Platforms: []string{tiktok.Name}}, func(t *testing.T, err error) {
			require.NoError(t, err)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, p := setup(t, sandbox.Options{Faults: tc.faults})
			_, err := send(t, p, rows(t))
			tc.check(t, err)
		})
	}
}

package tiktok_test

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
	require.NoError(t, n.Add(a, pii.Email, " ALICE_test@example.com "))
	require.NoError(t, n.Add(a, pii.Phone, "(+1)2133734253"))
	return []store.Conversion{
		{
			Key: "k-deal-1-won", Kind: store.KindConversion, ConversionName: "ClosedWon", Source: "hubspot", ObjectID: "deal-1",
			OccurredAt: time.Date(2026, 10, 18, 9, 0, 0, 0, time.UTC), Value: value(12500), Currency: "EUR",
			Identity: store.Identity{Identifiers: a},
		},
		{
			Key: "k-deal-2-won", Kind: store.KindConversion, ConversionName: "ClosedWon", Source: "hubspot", ObjectID: "deal-2",
			OccurredAt: time.Date(2026, 10, 19, 9, 0, 0, 0, time.UTC),
			Identity:   store.Identity{Clicks: []store.Click{{Type: "ttclid", ID: "E.C.P.test-ttclid"}}},
		},
	}
}

func config(url string) uploader.DestinationConfig {
	return uploader.DestinationConfig{Platform: "tiktok", BaseURL: url, Settings: &tiktok.Settings{EventSourceID: "7312345678901234567",
		AccessToken: "tiktok-test-token", LeadEventSource: "HubSpot"}}.WithDefaults(tiktok.Spec())
}

func TestGoldenBody(t *testing.T) {
	t.Parallel()
	p := tiktok.New(config("http://unused"), zaptest.NewLogger(t))
	body, err := p.Body(rows(t))
	require.NoError(t, err)
	s, err := schema.Load(schema.TikTok)
	require.NoError(t, err)
	require.Empty(t, s.ValidateJSON("EventTrackRequest", body))
	var pretty bytes.Buffer
	require.NoError(t, json.Indent(&pretty, body, "", "  "))
	pretty.WriteByte('\n')
	path := filepath.Join("..", "..", "testdata", "requests", "tiktok_event_track.json")
	if *update {
		require.NoError(t, os.WriteFile(path, pretty.Bytes(), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, string(want), pretty.String())
	require.Contains(t, string(body), "9f7ec22d72092cd3c0b58726ed9c2d91b92e51a3f29837508fb2948bb22dd2fd", "E.164 with +, TikTok's worked example")
}

func TestCheck(t *testing.T) {
	t.Parallel()
	p := tiktok.New(config("http://unused"), zaptest.NewLogger(t))
	cases := []struct {
		name   string
		mutate func(c *store.Conversion)
		class  uploader.Class
		reason string
	}{
		{"ok", func(*store.Conversion) {}, "", ""},
		{"retraction", func(c *store.Conversion) { c.Kind = store.KindRetraction }, uploader.ClassSkipped, "retraction_unsupported"},
		{"consent denied", func(c *store.Conversion) { c.Identity.Consent.AdUserData = store.ConsentDenied }, uploader.ClassSkipped, "consent_denied"},
		{"no identifier", func(c *store.Conversion) { c.Identity = store.Identity{} }, uploader.ClassPermanent, "no_identifier"},
		{"no event name", func(c *store.Conversion) { c.ConversionName = "" }, uploader.ClassPermanent, "missing_event_name"},
		{"bad currency", func(c *store.Conversion) { c.Currency = "eur " }, uploader.ClassPermanent, "invalid_currency"},
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
		code, status int
		class        uploader.Class
	}{
		{0, 200, uploader.ClassAccepted},
		{20001, 200, uploader.ClassAccepted},
		{40100, 200, uploader.ClassTransient},
		{42900, 200, uploader.ClassTransient},
		{50000, 200, uploader.ClassTransient},
		{50002, 500, uploader.ClassTransient},
		{40001, 200, uploader.ClassSetup},
		{40102, 200, uploader.ClassSetup},
		{40104, 200, uploader.ClassSetup},
		{40105, 200, uploader.ClassSetup},
		{40002, 200, uploader.ClassPermanent},
		{40999, 200, uploader.ClassUnknown},
		{12, 503, uploader.ClassTransient},
		{12, 200, uploader.ClassUnknown},
	}
	for _, tc := range cases {
		class, _ := tiktok.ErrorClass(tc.code, tc.status)
		require.Equal(t, tc.class, class, "code %d", tc.code)
	}
}

func setup(t *testing.T, opts sandbox.Options) (*sandbox.Server, *tiktok.Platform) {
	t.Helper()
	opts.Platforms = map[string]sandbox.PlatformOptions{tiktok.Name: {AccessToken: "tiktok-test-token"}}
	sb := platforms.NewSandbox(opts, zaptest.NewLogger(t))
	srv := httptest.NewServer(sb)
	t.Cleanup(srv.Close)
	return sb, tiktok.New(config(srv.URL), zaptest.NewLogger(t))
}

func send(t *testing.T, p uploader.Platform, batch []store.Conversion) ([]uploader.RowResult, error) {
	t.Helper()
	req, err := p.BuildRequest(context.Background(), batch, now)
	require.NoError(t, err)
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
	for range 2 {
		res, err := send(t, p, rows(t))
		require.NoError(t, err)
		for _, r := range res {
			require.Equal(t, uploader.ClassAccepted, r.Class)
		}
	}
	c := sb.Counts()[tiktok.Name]
	require.Equal(t, 4, c.Received)
	require.Equal(t, 2, c.AcceptedUnique)
	require.Equal(t, 2, c.Duplicates)
	require.Equal(t, 2, c.Keys["7312345678901234567/ClosedWon/k-deal-1-won"].Received)
	require.Equal(t, 1, c.Keys["7312345678901234567/ClosedWon/k-deal-1-won"].Effective)
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
			require.Equal(t, "50000", te.Reason)
		}},
		{"throttled in a 200 body", sandbox.Faults{Share429: 1, RetryAfterSeconds: 4}, func(t *testing.T, err error) {
			var te *uploader.Error
			require.True(t, errors.As(err, &te), "%v", err)
			require.Equal(t, uploader.ClassTransient, te.Class, "%v", err)
			require.Equal(t, "40100", te.Reason)
			require.Equal(t, 4*time.Second, te.RetryAfter)
		}},
		{"expired token", sandbox.Faults{ExpiredToken: true}, func(t *testing.T, err error) {
			var se *uploader.Error
			require.True(t, errors.As(err, &se), "%v", err)
			require.Equal(t, uploader.ClassSetup, se.Class, "%v", err)
		}},
		{"reject marker", sandbox.Faults{RejectMarker: "ClosedWon"}, func(t *testing.T, err error) {
			var br *uploader.Error
			require.True(t, errors.As(err, &br), "%v", err)
			require.Equal(t, uploader.ClassBatchRejected, br.Class, "%v", err)
			require.Equal(t, "40002", br.Reason)
		}},
		{"reject key", sandbox.Faults{RejectKeys: []string{"k-deal-2-won"}}, func(t *testing.T, err error) {
			var br *uploader.Error
			require.True(t, errors.As(err, &br), "%v", err)
			require.Equal(t, uploader.ClassBatchRejected, br.Class, "%v", err)
			require.Contains(t, br.Detail, "Batch.1")
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

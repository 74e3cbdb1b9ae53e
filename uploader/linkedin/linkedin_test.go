package linkedin_test

import (
	"context"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
	"github.com/closedloop/closedloop/uploader/linkedin"
	"github.com/closedloop/closedloop/uploader/platforms"
	"github.com/closedloop/closedloop/uploader/platformtest"
	"github.com/closedloop/closedloop/uploader/sandbox"
	"github.com/closedloop/closedloop/uploader/sandbox/schema"
)

var update = flag.Bool("update", false, "rewrite golden request bodies under testdata")

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var now = time.Date(2026, 10, 20, 12, 0, 0, 0, time.UTC)

func value(v float64) *float64 { return &v }

// rows: a hashed email with a li_fat_id and a value, and a li_fat_id alone.
func rows(t *testing.T) []store.Conversion {
	t.Helper()
	a := pii.Set{}
	require.NoError(t, pii.Normalizer{DefaultRegion: "US"}.Add(a, pii.Email, " Mary.Smith@Example.com "))
	return []store.Conversion{
		{
			Key: "k-deal-8841-won", Kind: store.KindConversion, ConversionName: "123456", Source: "hubspot",
			OccurredAt: time.Date(2026, 10, 14, 13, 2, 11, 0, time.UTC), Value: value(12500.5), Currency: "EUR",
			Identity: store.Identity{Identifiers: a, Clicks: []store.Click{{Type: "li_fat_id", ID: "df6c3a52-5c8c-4a1b-9f3e-2f1e3f6d1a11"}}},
		},
		{
			Key: "k-deal-8842-won", Kind: store.KindConversion, ConversionName: "123456", Source: "hubspot",
			OccurredAt: time.Date(2026, 10, 15, 8, 0, 0, 0, time.UTC),
			Identity:   store.Identity{Clicks: []store.Click{{Type: "li_fat_id", ID: "0b6f7c2e-1111-4d2a-8e0f-9a8b7c6d5e4f"}, {Type: "msclkid", ID: "not-linkedin"}}},
		},
	}
}

func config(url string) uploader.DestinationConfig {
	return uploader.DestinationConfig{Platform: "linkedin", BaseURL: url, Settings: &linkedin.Settings{
		ClientID: "li-client", ClientSecret: "li-secret", RefreshToken: "li-refresh", TokenURL: url + "/oauth/v2/accessToken",
	}}.WithDefaults(linkedin.Spec())
}

func TestConformance(t *testing.T) {
	platformtest.Run(t, platformtest.Suite{
		Spec: linkedin.Spec(), Now: now,
		Config: config,
		Rows:   func(time.Time) []store.Conversion { return rows(t) },
		Schema: schema.LinkedIn, Root: "BatchCreateConversionEventsRequest",
		Golden: filepath.Join("testdata", "conversion_events_batch_create.json"), Update: *update,
		Window:     linkedin.MaxAge - linkedin.AgeMargin,
		DedupField: "eventId",
		Responses: []platformtest.Response{
			{Name: "created", Status: 200, Body: `{"elements":[{"status":201},{"status":201}]}`, Want: uploader.ClassAccepted},
			{Name: "element invalid", Status: 200, Body: `{"elements":[{"status":400,"error":{"status":400,"message":"bad"}},{"status":201}]}`, Want: uploader.ClassPermanent},
			{Name: "element throttled", Status: 200, Body: `{"elements":[{"status":429},{"status":201}]}`, Want: uploader.ClassTransient},
			{Name: "element status this package does not know", Status: 200, Body: `{"elements":[{"status":418},{"status":201}]}`, Want: uploader.ClassUnknown},
			{Name: "one status for two rows", Status: 200, Body: `{"elements":[{"status":201}]}`, Want: uploader.ClassUnknown},
			{Name: "422 names row 0", Status: 422, Body: `{"status":422,"message":"Index: 0, ERROR :: /conversionValue/amount :: field is required but not found and has no default value\n"}`, Want: uploader.ClassPermanent},
			{Name: "422 naming no row", Status: 422, Body: `{"status":422,"message":"Unprocessable"}`, Want: uploader.ClassBatchRejected},
			{Name: "422 naming a row outside the batch", Status: 422, Body: `{"status":422,"message":"Index: 9, ERROR :: /user :: x\n"}`, Want: uploader.ClassBatchRejected},
			{Name: "version sunset", Status: 426, Body: `{"status":426,"code":"NONEXISTENT_VERSION","message":"Requested version 202410 is not active"}`, Want: uploader.ClassSetup},
			{Name: "revoked token", Status: 401, Body: `{"status":401,"serviceErrorCode":65601,"code":"REVOKED_ACCESS_TOKEN","message":"The token used in the request has been revoked by the user"}`, Want: uploader.ClassSetup},
			{Name: "setup inside a 5xx", Status: 500, Body: `{"status":500,"code":"REVOKED_ACCESS_TOKEN","message":"revoked"}`, Want: uploader.ClassSetup},
			{Name: "permissions", Status: 403, Body: `{"status":403,"serviceErrorCode":100,"code":"ACCESS_DENIED","message":"Not enough permissions"}`, Want: uploader.ClassSetup},
			{Name: "bad request in LinkedIn's shape", Status: 400, Body: `{"status":400,"message":"Invalid"}`, Want: uploader.ClassBatchRejected},
			{Name: "server error", Status: 500, Body: `{"status":500,"message":"Internal Server Error"}`, Want: uploader.ClassTransient},
			{Name: "429 Retry-After seconds", Status: 429, Header: platformtest.RetryAfterSeconds(20), Body: `{"status":429,"code":"TOO_MANY_REQUESTS","message":"m"}`, Want: uploader.ClassTransient, RetryAfter: 20 * time.Second},
			{Name: "503 Retry-After HTTP date", Status: 503, Header: platformtest.RetryAfterDate(3 * time.Minute), Want: uploader.ClassTransient, RetryAfter: 3 * time.Minute},
		},
	})
}

func TestBody(t *testing.T) {
	t.Parallel()
	p := linkedin.New(config("http://unused"), nil, zaptest.NewLogger(t))
	body, err := p.Body(rows(t))
	require.NoError(t, err)
	s := string(body)
	require.Contains(t, s, `"conversion":"urn:lla:llaPartnerConversion:123456"`)
	require.Contains(t, s, `"conversionHappenedAt":1791982931000`, "epoch milliseconds")
	require.Contains(t, s, `"conversionValue":{"currencyCode":"EUR","amount":"12500.5"}`, "amount is a decimal string")
	require.Contains(t, s, `"eventId":"k-deal-8841-won"`)
	require.NotContains(t, s, "not-linkedin")
	require.NotContains(t, s, "example.com", "no raw email")
	require.NotContains(t, s, "userInfo", "no plaintext user info: closedloop keeps only hashes")
}

func TestCheck(t *testing.T) {
	t.Parallel()
	p := linkedin.New(config("http://unused"), nil, zaptest.NewLogger(t))
	cases := []struct {
		name   string
		mutate func(c *store.Conversion)
		class  uploader.Class
		reason string
	}{
		{"ok", func(*store.Conversion) {}, "", ""},
		{"91 days old", func(c *store.Conversion) { c.OccurredAt = now.Add(-91 * 24 * time.Hour) }, uploader.ClassExpired, "event_too_old"},
		{"in the future waits", func(c *store.Conversion) { c.OccurredAt = now.Add(time.Hour) }, uploader.ClassTransient, "event_time_in_future"},
		{"retraction", func(c *store.Conversion) { c.Kind = store.KindRetraction }, uploader.ClassSkipped, "retraction_unsupported"},
		{"email alone", func(c *store.Conversion) { c.Identity.Clicks = nil }, "", ""},
		{"a phone alone is not enough", func(c *store.Conversion) {
			s := pii.Set{}
			require.NoError(t, pii.Normalizer{DefaultRegion: "US"}.Add(s, pii.Phone, "(650)555-1212"))
			c.Identity = store.Identity{Identifiers: s}
		}, uploader.ClassPermanent, "no_identifier"},
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

func TestSettingsValidate(t *testing.T) {
	t.Parallel()
	require.Empty(t, config("http://x").Validate("destinations.li", linkedin.Spec(), now))
	fixed := uploader.DestinationConfig{Platform: "linkedin", Settings: &linkedin.Settings{AccessToken: "t"}}.WithDefaults(linkedin.Spec())
	require.Empty(t, fixed.Validate("destinations.li", linkedin.Spec(), now))
	cases := []struct {
		s    linkedin.Settings
		want string
	}{
		{linkedin.Settings{}, "destinations.li.access_token: required"},
		{linkedin.Settings{AccessToken: "s3cr3t", RefreshToken: "r"}, "not both"},
		{linkedin.Settings{ClientID: "c", RefreshToken: "s3cr3t"}, "destinations.li.client_secret: required"},
	}
	for _, tc := range cases {
		tc.s.Defaults()
		var all string
		for _, e := range tc.s.Validate("destinations.li", uploader.DestinationConfig{Platform: "linkedin"}) {
			all += e.Error() + "\n"
		}
		require.Contains(t, all, tc.want)
		require.NotContains(t, all, "s3cr3t", "secrets are never echoed")
	}
	msg, refuse := linkedin.Spec().VersionWarning("202511", now, 30*24*time.Hour)
	require.False(t, refuse)
	require.Contains(t, msg, "sunsets on 2026-11-16")
	_, refuse = linkedin.Spec().VersionWarning("202510", now, 0)
	require.True(t, refuse, "202510 was sunset on 2026-10-15")
}

func setup(t *testing.T, opts sandbox.Options, mutate func(*uploader.DestinationConfig)) (*sandbox.Server, *linkedin.Platform) {
	t.Helper()
	opts.Now = func() time.Time { return now }
	sb := platforms.NewSandbox(opts, zaptest.NewLogger(t))
	srv := httptest.NewServer(sb)
	t.Cleanup(srv.Close)
	cfg := config(srv.URL)
	if mutate != nil {
		mutate(&cfg)
	}
	return sb, linkedin.New(cfg, srv.Client(), zaptest.NewLogger(t))
}

func send(t *testing.T, p uploader.Platform, batch []store.Conversion) ([]uploader.RowResult, error) {
	t.Helper()
	req, err := p.BuildRequest(context.Background(), batch, now)
	if err != nil {
		return nil, err
	}
	require.Equal(t, "2.0.0", req.Header.Get("X-Restli-Protocol-Version"))
	require.Equal(t, "BATCH_CREATE", req.Header.Get("X-RestLi-Method"))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return p.ParseResponse(resp, body, batch)
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	sb, p := setup(t, sandbox.Options{}, nil)
	for range 2 {
		res, err := send(t, p, rows(t))
		require.NoError(t, err)
		for _, r := range res {
			require.Equal(t, uploader.ClassAccepted, r.Class)
		}
	}
	c := sb.Counts()[linkedin.Name]
	require.Equal(t, 4, c.Received)
	require.Equal(t, 2, c.AcceptedUnique, "eventId dedups")
	require.Equal(t, 2, c.Duplicates)
}

func TestSandboxAnswers(t *testing.T) {
	t.Parallel()
	t.Run("a rejected element rejects only its row", func(t *testing.T) {
		t.Parallel()
		batch := rows(t)
		batch[1].ConversionName = "999"
		_, p := setup(t, sandbox.Options{Faults: sandbox.Faults{RejectMarker: "999"}}, nil)
		res, err := send(t, p, batch)
		require.NoError(t, err)
		require.Equal(t, uploader.ClassAccepted, res[0].Class)
		require.Equal(t, uploader.ClassPermanent, res[1].Class)
	})
	t.Run("an event too old fails the batch, naming it; the other row retries", func(t *testing.T) {
		t.Parallel()
		_, p := setup(t, sandbox.Options{}, nil)
		batch := rows(t)
		batch[0].OccurredAt = now.Add(-100 * 24 * time.Hour) // as if Check had been skipped
		res, err := send(t, p, batch)
		require.NoError(t, err)
		require.Equal(t, uploader.ClassPermanent, res[0].Class)
		require.Contains(t, res[0].Detail, "/conversionHappenedAt")
		require.Equal(t, uploader.ClassTransient, res[1].Class)
	})
	t.Run("a sunset version is setup naming the version to set", func(t *testing.T) {
		t.Parallel()
		_, p := setup(t, sandbox.Options{}, func(d *uploader.DestinationConfig) { d.APIVersion = "202410" })
		_, err := send(t, p, rows(t))
		var e *uploader.Error
		require.True(t, errors.As(err, &e), "%v", err)
		require.Equal(t, uploader.ClassSetup, e.Class)
		require.Equal(t, "NONEXISTENT_VERSION", e.Reason)
		require.Contains(t, e.Detail, "set api_version: 202608")
	})
	t.Run("a fixed token that expired pauses", func(t *testing.T) {
		t.Parallel()
		_, p := setup(t, sandbox.Options{Faults: sandbox.Faults{ExpiredToken: true}}, func(d *uploader.DestinationConfig) {
			d.Settings = &linkedin.Settings{AccessToken: "fixed", TokenURL: "http://unused"}
		})
		_, err := send(t, p, rows(t))
		var e *uploader.Error
		require.True(t, errors.As(err, &e), "%v", err)
		require.Equal(t, uploader.ClassSetup, e.Class)
		require.Equal(t, "EXPIRED_ACCESS_TOKEN", e.Reason)
	})
	t.Run("faults", func(t *testing.T) {
		t.Parallel()
		_, p := setup(t, sandbox.Options{Faults: sandbox.Faults{Share429: 1, RetryAfterSeconds: 7}}, nil)
		_, err := send(t, p, rows(t))
		var e *uploader.Error
		require.True(t, errors.As(err, &e), "%v", err)
		require.Equal(t, uploader.ClassTransient, e.Class)
		require.Equal(t, 7*time.Second, e.RetryAfter)
		_, p = setup(t, sandbox.Options{Faults: sandbox.Faults{ShareBatchReject: 1}}, nil)
		_, err = send(t, p, rows(t))
		require.True(t, errors.As(err, &e), "%v", err)
		require.Equal(t, uploader.ClassBatchRejected, e.Class)
	})
}

// FuzzParseResponse: any answer gives one result per row or a classified error, never a
// panic.
func FuzzParseResponse(f *testing.F) {
	f.Add(200, `{"elements":[{"status":201},{"status":400}]}`)
	f.Add(422, `{"status":422,"message":"Index: 1, ERROR :: /user :: x\n"}`)
	f.Add(426, `{"status":426,"code":"NONEXISTENT_VERSION"}`)
	f.Add(400, `<html>`)
	f.Fuzz(func(t *testing.T, status int, body string) {
		p := linkedin.New(config("http://unused"), nil, zaptest.NewLogger(t))
		batch := rows(t)
		resp := &http.Response{StatusCode: status, Header: http.Header{}}
		res, err := p.ParseResponse(resp, []byte(body), batch)
		if err != nil {
			require.Nil(t, res)
			return
		}
		require.Len(t, res, len(batch))
	})
}

package microsoft_test

import (
	"context"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
	"github.com/closedloop/closedloop/uploader/meta"
	"github.com/closedloop/closedloop/uploader/microsoft"
	"github.com/closedloop/closedloop/uploader/platforms"
	"github.com/closedloop/closedloop/uploader/platformtest"
	"github.com/closedloop/closedloop/uploader/sandbox"
	"github.com/closedloop/closedloop/uploader/sandbox/schema"
)

var update = flag.Bool("update", false, "rewrite golden request bodies under testdata")

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var now = time.Date(2026, 10, 20, 12, 0, 0, 0, time.UTC)

func value(v float64) *float64 { return &v }

// rows: a click with value, and an enhanced conversion with hashes only (no msclkid).
func rows(t *testing.T) []store.Conversion {
	t.Helper()
	n := pii.Normalizer{DefaultRegion: "US"}
	a := pii.Set{}
	require.NoError(t, n.Add(a, pii.Email, " Pat.Example@Example.com "))
	require.NoError(t, n.Add(a, pii.Phone, "(650)555-1212"))
	b := pii.Set{}
	require.NoError(t, n.Add(b, pii.Email, "lead.person@example.net"))
	return []store.Conversion{
		{
			Key: "k-deal-1-won", Kind: store.KindConversion, ConversionName: "Closed Won", Source: "hubspot",
			OccurredAt: time.Date(2026, 10, 18, 9, 0, 0, 123e6, time.UTC), Value: value(12500), Currency: "EUR",
			Identity: store.Identity{Identifiers: a, Clicks: []store.Click{
				{Type: "msclkid", ID: "f894f652ea334e739002f7167ab8f8e3", At: time.Date(2026, 10, 1, 10, 0, 0, 0, time.UTC)},
				{Type: "gclid", ID: "not-for-microsoft"},
			}},
		},
		{
			Key: "k-lead-7-sql", Kind: store.KindConversion, ConversionName: "Sales Accepted", Source: "salesforce",
			OccurredAt: time.Date(2026, 10, 19, 15, 30, 0, 0, time.FixedZone("CEST", 2*3600)),
			Identity:   store.Identity{Identifiers: b},
		},
	}
}

func config(url string) uploader.DestinationConfig {
	return uploader.DestinationConfig{Platform: "microsoft", BaseURL: url, Settings: &microsoft.Settings{
		CustomerID: "123456", CustomerAccountID: "7890123", DeveloperToken: "ms-dev-token",
		ClientID: "ms-client", ClientSecret: "ms-secret", RefreshToken: "ms-refresh", TokenURL: url + "/token",
	}}.WithDefaults(microsoft.Spec())
}

func fault(code int, errorCode string) string {
	return `{"TrackingId":"t-1","Type":"AdApiFaultDetail","Errors":[{"Code":` + strconv.Itoa(code) + `,"ErrorCode":"` + errorCode + `","Message":"m"}]}`
}

func partial(index int, errorCode string) string {
	return `{"PartialErrors":[{"Index":` + strconv.Itoa(index) + `,"Code":4800,"ErrorCode":"` + errorCode + `","Message":"m","Type":"BatchError"}]}`
}

func TestConformance(t *testing.T) {
	platformtest.Run(t, platformtest.Suite{
		Spec: microsoft.Spec(), Now: now,
		Config: config,
		Rows:   func(time.Time) []store.Conversion { return rows(t) },
		Schema: schema.Microsoft, Root: "ApplyOfflineConversionsRequest",
		Golden: filepath.Join("testdata", "offline_conversions_apply.json"), Update: *update,
		Window: microsoft.MaxAge - microsoft.AgeMargin,
		// Microsoft's dedup key is MicrosoftClickId + ConversionTime, not a field of ours.
		DedupField: "",
		Responses: []platformtest.Response{
			{Name: "applied", Status: 200, Body: `{"PartialErrors":[]}`, Want: uploader.ClassAccepted},
			{Name: "applied, null list", Status: 200, Body: `{"PartialErrors":null}`, Want: uploader.ClassAccepted},
			{Name: "row 0 click id invalid", Status: 200, Body: partial(0, "OfflineConversionMSClickIdInvalid"), Want: uploader.ClassPermanent},
			{Name: "row 0 goal too recent", Status: 200, Body: partial(0, "OfflineConversionGoalTooRecent"), Want: uploader.ClassHeld, RetryAfter: 2 * time.Hour},
			{Name: "row 0 goal unknown", Status: 200, Body: partial(0, "OfflineConversionNameInvalid"), Want: uploader.ClassHeld},
			{Name: "row 0 outside the window", Status: 200, Body: partial(0, "OfflineConversionTimeOutOfWindow"), Want: uploader.ClassExpired},
			{Name: "row 0 in the future", Status: 200, Body: partial(0, "FutureConversionTimeCannotBeSet"), Want: uploader.ClassTransient, RetryAfter: 15 * time.Minute},
			{Name: "row 0 a code this package does not list", Status: 200, Body: partial(0, "OfflineConversionSomethingNew"), Want: uploader.ClassUnknown},
			{Name: "index outside the batch", Status: 200, Body: partial(7, "OfflineConversionMSClickIdInvalid"), Want: uploader.ClassUnknown},
			{Name: "too many rows", Status: 200, Body: partial(0, "OfflineConversionBatchSizeExceedsLimit"), Want: uploader.ClassBatchRejected},
			// A refusal of a cached token is refreshed and resent first (Refreshed); a refusal
			// of the token fetched after it is setup (TestAuth).
			{Name: "credentials refused on a cached token", Status: 401, Body: fault(105, "InvalidCredentials"), Want: uploader.ClassTransient},
			{Name: "not authorized for the account", Status: 400, Body: fault(106, "UserIsNotAuthorized"), Want: uploader.ClassSetup},
			{Name: "setup inside a 5xx", Status: 500, Body: fault(106, "UserIsNotAuthorized"), Want: uploader.ClassSetup},
			{Name: "internal error", Status: 500, Body: fault(0, "InternalError"), Want: uploader.ClassTransient},
			{Name: "call rate exceeded", Status: 429, Body: fault(117, "CallRateExceeded"), Want: uploader.ClassTransient, RetryAfter: time.Minute},
			{Name: "operation error naming a row's documented error", Status: 400,
				Body: `{"Type":"ApiFaultDetail","OperationErrors":[],"BatchErrors":[{"Index":1,"Code":4800,"ErrorCode":"OfflineConversionCurrencyCodeInvalid","Message":"m"}]}`, Want: uploader.ClassBatchRejected},
			{Name: "operation error this package does not know", Status: 400,
				Body: `{"Type":"ApiFaultDetail","OperationErrors":[{"Code":9999,"ErrorCode":"SomethingNew","Message":"m"}]}`, Want: uploader.ClassUnknown},
			{Name: "unknown fault inside a 5xx", Status: 503,
				Body: `{"Type":"ApiFaultDetail","OperationErrors":[{"Code":9999,"ErrorCode":"SomethingNew","Message":"m"}]}`, Want: uploader.ClassTransient},
			{Name: "429 Retry-After seconds", Status: 429, Header: platformtest.RetryAfterSeconds(20), Want: uploader.ClassTransient, RetryAfter: 20 * time.Second},
			{Name: "503 Retry-After HTTP date", Status: 503, Header: platformtest.RetryAfterDate(3 * time.Minute), Want: uploader.ClassTransient, RetryAfter: 3 * time.Minute},
		},
	})
}

func TestBody(t *testing.T) {
	t.Parallel()
	p := microsoft.New(config("http://unused"), nil, zaptest.NewLogger(t))
	body, err := p.Body(rows(t))
	require.NoError(t, err)
	s := string(body)
	require.Contains(t, s, `"ConversionTime":"2026-10-18T09:00:00Z"`, "UTC, to the second: a resend carries the same time")
	require.Contains(t, s, `"ConversionTime":"2026-10-19T13:30:00Z"`, "a CRM time in another zone is sent in UTC")
	require.NotContains(t, s, "not-for-microsoft", "only the msclkid is a Microsoft click")
	require.NotContains(t, s, "example.com", "no raw email")
	require.Contains(t, s, `{"ConversionName":"Sales Accepted","ConversionTime":"2026-10-19T13:30:00Z","HashedEmailAddress":`,
		"an enhanced conversion goes without MicrosoftClickId and without a value")
}

func TestCheck(t *testing.T) {
	t.Parallel()
	p := microsoft.New(config("http://unused"), nil, zaptest.NewLogger(t))
	cases := []struct {
		name   string
		mutate func(c *store.Conversion)
		class  uploader.Class
		reason string
		wait   time.Duration
	}{
		{"ok", func(*store.Conversion) {}, "", "", 0},
		{"89 days old", func(c *store.Conversion) { c.OccurredAt = now.Add(-89 * 24 * time.Hour) }, "", "", 0},
		{"91 days old", func(c *store.Conversion) { c.OccurredAt = now.Add(-91 * 24 * time.Hour) }, uploader.ClassExpired, "conversion_too_old", 0},
		{"in the future waits", func(c *store.Conversion) { c.OccurredAt = now.Add(time.Hour) }, uploader.ClassTransient, "conversion_time_in_future", time.Hour},
		{"a CRM clock a few seconds ahead is fine", func(c *store.Conversion) { c.OccurredAt = now.Add(10 * time.Second) }, "", "", 0},
		{"retraction without its conversion's key", func(c *store.Conversion) { c.Kind = store.KindRetraction }, uploader.ClassPermanent, "missing_retracts_key", 0},
		{"retraction", func(c *store.Conversion) { c.Kind, c.RetractsKey, c.Value = store.KindRetraction, "k", nil }, "", "", 0},
		{"restatement", func(c *store.Conversion) { c.Kind, c.RetractsKey = store.KindRestatement, "k" }, "", "", 0},
		{"restatement without a value", func(c *store.Conversion) { c.Kind, c.RetractsKey, c.Value = store.KindRestatement, "k", nil }, uploader.ClassPermanent, "missing_value", 0},
		{"a 91-day-old original is not the adjustment's business", func(c *store.Conversion) {
			c.Kind, c.RetractsKey, c.OccurredAt = store.KindRetraction, "k", now.Add(-91*24*time.Hour)
		}, "", "", 0},
		{"negative value", func(c *store.Conversion) { c.Value = value(-1) }, uploader.ClassPermanent, "invalid_value", 0},
		{"hash without click is enough", func(c *store.Conversion) { c.Identity.Clicks = nil }, "", "", 0},
		{"click without hash is enough", func(c *store.Conversion) { c.Identity.Identifiers = nil }, "", "", 0},
		{"a gclid alone is not", func(c *store.Conversion) {
			c.Identity = store.Identity{Clicks: []store.Click{{Type: "gclid", ID: "g"}}}
		}, uploader.ClassPermanent, "no_identifier", 0},
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
		require.Equal(t, tc.wait, got.RetryAfter, tc.name)
	}
}

func TestSettingsValidate(t *testing.T) {
	t.Parallel()
	d := config("http://x")
	require.Empty(t, d.Validate("destinations.ms", microsoft.Spec(), now))
	bad := &microsoft.Settings{CustomerID: "12-34", ClientSecret: "s3cr3t-value", RefreshToken: "", TokenURL: "ftp://x", Scope: " "}
	errs := bad.Validate("destinations.ms", uploader.DestinationConfig{Platform: "microsoft"})
	var all string
	for _, e := range errs {
		all += e.Error() + "\n"
	}
	for _, want := range []string{"destinations.ms.customer_id:", "destinations.ms.customer_account_id:", "destinations.ms.developer_token: required",
		"destinations.ms.client_id: required", "destinations.ms.refresh_token: required", "destinations.ms.token_url:", "destinations.ms.scope:"} {
		require.Contains(t, all, want)
	}
	require.NotContains(t, all, "s3cr3t-value", "secrets are never echoed")
}

type harness struct {
	sb *sandbox.Server
	p  *microsoft.Platform
}

func setup(t *testing.T, opts sandbox.Options) harness {
	t.Helper()
	opts.Now = func() time.Time { return now }
	sb := platforms.NewSandbox(opts, zaptest.NewLogger(t))
	srv := httptest.NewServer(sb)
	t.Cleanup(srv.Close)
	return harness{sb: sb, p: microsoft.New(config(srv.URL), srv.Client(), zaptest.NewLogger(t))}
}

func send(t *testing.T, p uploader.Platform, batch []store.Conversion) ([]uploader.RowResult, error) {
	t.Helper()
	req, err := p.BuildRequest(context.Background(), batch, now)
	if err != nil {
		return nil, err
	}
	for _, h := range []string{"DeveloperToken", "CustomerId", "CustomerAccountId"} {
		require.NotEmpty(t, req.Header.Get(h), h)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return p.ParseResponse(resp, body, batch)
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	h := setup(t, sandbox.Options{})
	for range 2 {
		res, err := send(t, h.p, rows(t))
		require.NoError(t, err)
		for _, r := range res {
			require.Equal(t, uploader.ClassAccepted, r.Class)
		}
	}
	c := h.sb.Counts()[microsoft.Name]
	require.Equal(t, 4, c.Received)
	require.Equal(t, 2, c.AcceptedUnique, "same click id + conversion time counts once")
	require.Equal(t, 2, c.Duplicates)
}

func TestPartialErrorsByIndex(t *testing.T) {
	t.Parallel()
	h := setup(t, sandbox.Options{Platforms: map[string]sandbox.PlatformOptions{microsoft.Name: {Conversions: []string{"Closed Won"}}}})
	res, err := send(t, h.p, rows(t))
	require.NoError(t, err)
	require.Equal(t, uploader.ClassAccepted, res[0].Class)
	require.Equal(t, uploader.ClassHeld, res[1].Class, "an unknown goal holds that goal's rows only")
	require.Equal(t, "OfflineConversionNameInvalid", res[1].Reason)
	require.Equal(t, 1, h.sb.Counts()[microsoft.Name].AcceptedUnique)

	batch := rows(t)
	batch[0].ConversionName = sandbox.DefaultRejectMarker
	batch[1].ConversionName = "Closed Won"
	res, err = send(t, h.p, batch)
	require.NoError(t, err)
	require.Equal(t, uploader.ClassPermanent, res[0].Class, "a documented row error rejects that row")
	require.Equal(t, uploader.ClassAccepted, res[1].Class)
}

func TestGoalTooRecentWaitsNeverDrops(t *testing.T) {
	t.Parallel()
	h := setup(t, sandbox.Options{Faults: sandbox.Faults{TooRecentGoals: []string{"Sales Accepted"}}})
	res, err := send(t, h.p, rows(t))
	require.NoError(t, err)
	require.Equal(t, uploader.ClassAccepted, res[0].Class)
	require.Equal(t, uploader.ClassHeld, res[1].Class)
	require.Equal(t, microsoft.GoalWait, res[1].RetryAfter)

	// Another row of that goal is held before sending, for the rest of the wait.
	other := rows(t)[1]
	other.Key = "k-lead-8-sql"
	e := h.p.Check(&other, time.Now().Add(time.Hour))
	require.NotNil(t, e)
	require.Equal(t, uploader.ClassHeld, e.Class)
	require.Equal(t, "OfflineConversionGoalTooRecent", e.Reason)
	require.InDelta(t, time.Hour.Seconds(), e.RetryAfter.Seconds(), 5)
	require.Nil(t, h.p.Check(&other, time.Now().Add(microsoft.GoalWait+time.Minute)), "after the wait the goal's rows go out")
}

func TestAuth(t *testing.T) {
	t.Parallel()
	t.Run("a token refused right after its refresh is setup", func(t *testing.T) {
		t.Parallel()
		h := setup(t, sandbox.Options{TokenTTL: time.Hour})
		_, err := send(t, h.p, rows(t)) // fetches and caches a token
		require.NoError(t, err)
		h.sb.SetFaults(sandbox.Faults{ExpiredToken: true})
		_, err = send(t, h.p, rows(t))
		var e *uploader.Error
		require.True(t, errors.As(err, &e), "%v", err)
		require.True(t, e.Refreshed, "the cached token's refusal is refreshed and resent: %v", err)
		_, err = send(t, h.p, rows(t)) // what the dispatcher does: resend once with a fresh token
		require.True(t, errors.As(err, &e), "%v", err)
		// The fresh token is refused too: setup, not a loop.
		require.Equal(t, uploader.ClassSetup, e.Class, "%v", err)
		require.Equal(t, "AuthenticationTokenExpired", e.Reason)
	})
	t.Run("refresh token refused", func(t *testing.T) {
		t.Parallel()
		h := setup(t, sandbox.Options{RefreshToken: "another"})
		_, err := send(t, h.p, rows(t))
		var e *uploader.Error
		require.True(t, errors.As(err, &e), "%v", err)
		require.Equal(t, uploader.ClassSetup, e.Class)
		require.Equal(t, "oauth_invalid_grant", e.Reason)
	})
	t.Run("wrong developer token", func(t *testing.T) {
		t.Parallel()
		h := setup(t, sandbox.Options{Platforms: map[string]sandbox.PlatformOptions{microsoft.Name: {DeveloperToken: "the-right-one"}}})
		_, err := send(t, h.p, rows(t))
		var e *uploader.Error
		if errors.As(err, &e) && e.Refreshed {
			_, err = send(t, h.p, rows(t)) // resent once with a fresh token
		}
		require.True(t, errors.As(err, &e), "%v", err)
		require.Equal(t, uploader.ClassSetup, e.Class, "a fresh token refused: the credentials are wrong")
		require.Equal(t, "InvalidCredentials", e.Reason)
	})
}

func TestFaults(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		faults sandbox.Faults
		class  uploader.Class
		reason string
		wait   time.Duration
	}{
		{"5xx", sandbox.Faults{Share5xx: 1}, uploader.ClassTransient, "InternalError", 0},
		{"429", sandbox.Faults{Share429: 1, RetryAfterSeconds: 9}, uploader.ClassTransient, "CallRateExceeded", 9 * time.Second},
		{"scoped to another platform", sandbox.Faults{Share5xx: 1, Platforms: []string{meta.Name}}, "", "", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := setup(t, sandbox.Options{Faults: tc.faults})
			_, err := send(t, h.p, rows(t))
			if tc.class == "" {
				require.NoError(t, err)
				return
			}
			var e *uploader.Error
			require.True(t, errors.As(err, &e), "%v", err)
			require.Equal(t, tc.class, e.Class)
			require.Equal(t, tc.reason, e.Reason)
			if tc.wait > 0 {
				require.Equal(t, tc.wait, e.RetryAfter)
			}
		})
	}
}

// FuzzParseResponse: any answer gives one result per row or a classified error, never a
// panic; a fault body this package cannot read never rejects a row.
func FuzzParseResponse(f *testing.F) {
	f.Add(200, `{"PartialErrors":[{"Index":1,"ErrorCode":"OfflineConversionNameInvalid"}]}`)
	f.Add(401, fault(105, "InvalidCredentials"))
	f.Add(500, `{"Type":"ApiFaultDetail","BatchErrors":[{"Index":-1}]}`)
	f.Add(400, `not json`)
	f.Fuzz(func(t *testing.T, status int, body string) {
		p := microsoft.New(config("http://unused"), nil, zaptest.NewLogger(t))
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

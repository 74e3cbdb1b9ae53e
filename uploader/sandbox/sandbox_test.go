package sandbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/uploader/google"
	"github.com/closedloop/closedloop/uploader/meta"
	"github.com/closedloop/closedloop/uploader/platforms"
	"github.com/closedloop/closedloop/uploader/sandbox"
	"github.com/closedloop/closedloop/uploader/tiktok"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var now = time.Date(2026, 10, 20, 12, 0, 0, 0, time.UTC)

const hash = "fb4f73a6ec5fdb7077d564cdd22c3554b43ce49168550c3b12c547b78c517b30"

type env struct {
	sb  *sandbox.Server
	url string
}

func setup(t *testing.T, opts sandbox.Options) env {
	t.Helper()
	opts.Now = func() time.Time { return now }
	sb := platforms.NewSandbox(opts, zaptest.NewLogger(t))
	srv := httptest.NewServer(sb)
	t.Cleanup(srv.Close)
	return env{sb: sb, url: srv.URL}
}

func (e env) do(t *testing.T, method, path string, header map[string]string, body string) (int, http.Header, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, strings.NewReader(body))
	require.NoError(t, err)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var out map[string]any
	if len(b) > 0 {
		require.NoError(t, json.Unmarshal(b, &out), string(b))
	}
	return resp.StatusCode, resp.Header, out
}

func (e env) googleToken(t *testing.T) map[string]string {
	t.Helper()
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"rt"}, "client_id": {"c"}, "client_secret": {"s"}}
	resp, err := http.PostForm(e.url+"/token", form)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&tok))
	return map[string]string{"Authorization": "Bearer " + tok.AccessToken, "Content-Type": "application/json"}
}

func dmBody(events ...string) string {
	return `{"destinations":[{"operatingAccount":{"accountType":"GOOGLE_ADS","accountId":"1234567890"},"productDestinationId":"987"}],` +
		`"encoding":"HEX","events":[` + strings.Join(events, ",") + `]}`
}

func dmEvent(id, extra string) string {
	return `{"transactionId":"` + id + `","eventTimestamp":"2026-10-14T13:02:11Z"` + extra + `}`
}

func googleReason(body map[string]any) string {
	for _, d := range body["error"].(map[string]any)["details"].([]any) {
		if r, ok := d.(map[string]any)["reason"].(string); ok {
			return r
		}
	}
	return ""
}

func TestDataManagerValidation(t *testing.T) {
	t.Parallel()
	e := setup(t, sandbox.Options{})
	h := e.googleToken(t)
	many := make([]string, 2001)
	for i := range many {
		many[i] = dmEvent(fmt.Sprint("t", i), "")
	}
	cases := []struct {
		name, body, reason string
	}{
		{"non-hex hash", dmBody(dmEvent("a", `,"userData":{"userIdentifiers":[{"emailAddress":"zz`+hash[2:]+`"}]}`)), "INVALID_HEX_ENCODING"},
		{"short hash", dmBody(dmEvent("a", `,"userData":{"userIdentifiers":[{"emailAddress":"abcd"}]}`)), "INVALID_SHA256_FORMAT"},
		{"naive timestamp", dmBody(`{"transactionId":"a","eventTimestamp":"2026-10-14T13:02:11"}`), "INVALID_ARGUMENT"},
		{"both braids", dmBody(dmEvent("a", `,"adIdentifiers":{"gbraid":"g","wbraid":"w"}`)), "INVALID_ARGUMENT"},
		{"unknown field", dmBody(dmEvent("a", `,"clickId":"x"`)), "INVALID_ARGUMENT"},
		{"over the batch limit", dmBody(many...), "INVALID_ARGUMENT"},
		{"hyphenated customer id", strings.Replace(dmBody(dmEvent("a", "")), "1234567890", "123-456-7890", 1), "INVALID_DESTINATION"},
		{"missing encoding with user data", strings.Replace(dmBody(dmEvent("a", `,"userData":{"userIdentifiers":[{"emailAddress":"`+hash+`"}]}`)), `"encoding":"HEX",`, "", 1), "REQUIRED_FIELD_MISSING"},
	}
	for _, tc := range cases {
		status, _, body := e.do(t, http.MethodPost, "/v1/events:ingest", h, tc.body)
		require.Equal(t, http.StatusBadRequest, status, tc.name)
		require.Equal(t, "INVALID_ARGUMENT", body["error"].(map[string]any)["status"], tc.name)
		require.Equal(t, tc.reason, googleReason(body), tc.name)
	}
	require.Zero(t, e.sb.Counts()[google.DataManagerName].Received, "nothing of a rejected request is ingested")

	status, _, body := e.do(t, http.MethodPost, "/v1/events:ingest", map[string]string{"Authorization": "Bearer nope"}, dmBody(dmEvent("a", "")))
	require.Equal(t, http.StatusUnauthorized, status)
	require.Equal(t, "UNAUTHENTICATED", body["error"].(map[string]any)["status"])

	status, _, body = e.do(t, http.MethodPost, "/v1/events:ingest", h, dmBody(dmEvent("a", `,"userData":{"userIdentifiers":[{"emailAddress":"`+hash+`"}]}`)))
	require.Equal(t, http.StatusOK, status)
	require.NotEmpty(t, body["requestId"])
}

func TestTokenEndpoint(t *testing.T) {
	t.Parallel()
	e := setup(t, sandbox.Options{ClientID: "c", ClientSecret: "s", RefreshToken: "rt"})
	e.googleToken(t)
	for _, tc := range []struct {
		form   url.Values
		status int
		err    string
	}{
		{url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"other"}, "client_id": {"c"}, "client_secret": {"s"}}, 400, "invalid_grant"},
		{url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"rt"}, "client_id": {"c"}, "client_secret": {"x"}}, 401, "invalid_client"},
		{url.Values{"grant_type": {"password"}}, 400, "unsupported_grant_type"},
	} {
		resp, err := http.PostForm(e.url+"/token", tc.form)
		require.NoError(t, err)
		var body map[string]string
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
		resp.Body.Close()
		require.Equal(t, tc.status, resp.StatusCode)
		require.Equal(t, tc.err, body["error"])
	}
}

func TestMetaSevenDaysAndDedupWindow(t *testing.T) {
	t.Parallel()
	clock := now
	sb := platforms.NewSandbox(sandbox.Options{Now: func() time.Time { return clock }}, zaptest.NewLogger(t))
	srv := httptest.NewServer(sb)
	defer srv.Close()
	e := env{sb: sb, url: srv.URL}
	h := map[string]string{"Authorization": "Bearer t", "Content-Type": "application/json"}
	event := func(at time.Time) string {
		return fmt.Sprintf(`{"data":[{"event_name":"Won","event_time":%d,"event_id":"k1","action_source":"system_generated","user_data":{"em":["%s"]}}]}`, at.Unix(), hash)
	}
	status, _, body := e.do(t, http.MethodPost, "/v25.0/123/events", h, event(now.Add(-8*24*time.Hour)))
	require.Equal(t, http.StatusBadRequest, status)
	errObj := body["error"].(map[string]any)
	require.Equal(t, float64(100), errObj["code"])
	require.Equal(t, float64(2804003), errObj["error_subcode"])
	require.Equal(t, "OAuthException", errObj["type"])
	require.NotEmpty(t, errObj["fbtrace_id"])

	for range 2 {
		status, _, body = e.do(t, http.MethodPost, "/v25.0/123/events", h, event(now.Add(-time.Hour)))
		require.Equal(t, http.StatusOK, status)
		require.Equal(t, float64(1), body["events_received"])
	}
	clock = clock.Add(49 * time.Hour) // past Meta's 48 h dedup window
	status, _, _ = e.do(t, http.MethodPost, "/v25.0/123/events", h, event(now))
	require.Equal(t, http.StatusOK, status)
	kc := sb.Counts()[meta.Name].Keys["123/Won/k1"]
	require.Equal(t, 3, kc.Received)
	require.Equal(t, 2, kc.Effective, "a resend after 48h counts again, like Meta")
}

func TestFaultsEndpointAndReset(t *testing.T) {
	t.Parallel()
	e := setup(t, sandbox.Options{})
	status, _, _ := e.do(t, http.MethodPost, "/sandbox/faults", nil, `{"share_429":1,"retry_after_seconds":7,"platforms":["tiktok"]}`)
	require.Equal(t, http.StatusOK, status)
	status, _, body := e.do(t, http.MethodGet, "/sandbox/faults", nil, "")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, float64(7), body["retry_after_seconds"])
	status, _, _ = e.do(t, http.MethodPost, "/sandbox/faults", nil, `{"share_four_hundred":1}`)
	require.Equal(t, http.StatusBadRequest, status, "unknown fault keys are refused")

	tt := `{"event_source":"crm","event_source_id":"7","data":[{"event":"Won","event_time":1792314000,"event_id":"k","user":{"email":["` + hash + `"]}}]}`
	h := map[string]string{"Access-Token": "t", "Content-Type": "application/json"}
	status, hdr, body := e.do(t, http.MethodPost, "/open_api/v1.3/event/track/", h, tt)
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, float64(40100), body["code"])
	require.Equal(t, "7", hdr.Get("Retry-After"))

	e.do(t, http.MethodPost, "/sandbox/faults", nil, `{}`)
	status, _, body = e.do(t, http.MethodPost, "/open_api/v1.3/event/track/", h, tt)
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, float64(0), body["code"])

	status, _, body = e.do(t, http.MethodGet, "/sandbox/counts", nil, "")
	require.Equal(t, http.StatusOK, status)
	tk := body["tiktok"].(map[string]any)
	require.Equal(t, float64(1), tk["accepted_unique"])
	require.Equal(t, float64(1), tk["faulted"])
	e.do(t, http.MethodPost, "/sandbox/reset", nil, "")
	require.Zero(t, e.sb.Counts()[tiktok.Name].Received)
}

// Same seed, same request order: the same faults.
func TestSeededFaultsAreReproducible(t *testing.T) {
	t.Parallel()
	run := func(seed int64) []int {
		e := setup(t, sandbox.Options{Seed: seed, Faults: sandbox.Faults{Share5xx: 0.3, Share429: 0.3}})
		h := map[string]string{"Access-Token": "t"}
		var codes []int
		for i := range 40 {
			tt := fmt.Sprintf(`{"event_source":"crm","event_source_id":"7","data":[{"event":"Won","event_time":1792314000,"event_id":"k%d","user":{"email":["%s"]}}]}`, i, hash)
			status, _, body := e.do(t, http.MethodPost, "/open_api/v1.3/event/track/", h, tt)
			codes = append(codes, status*100000+int(body["code"].(float64)))
		}
		return codes
	}
	a, b, c := run(7), run(7), run(8)
	require.Equal(t, a, b)
	require.NotEqual(t, a, c)
	ok := 0
	for _, x := range a {
		if x == 200*100000 {
			ok++
		}
	}
	require.Greater(t, ok, 5)
	require.Less(t, ok, 35)
}

func TestStartAndShutdown(t *testing.T) {
	t.Parallel()
	sb := platforms.NewSandbox(sandbox.Options{}, zaptest.NewLogger(t))
	u, err := sb.Start("127.0.0.1:0")
	require.NoError(t, err)
	resp, err := http.Get(u + "/sandbox/counts")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, sb.Shutdown(ctx))
}

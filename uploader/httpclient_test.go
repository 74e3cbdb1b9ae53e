package uploader

import (
	"errors"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestLoggerAdapterNeverLogsTokensOrQueryStrings(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zap.DebugLevel)
	l := zapLeveled{log: zap.New(core)}
	u := "https://graph.facebook.com/v25.0/123/events?access_token=EAAB-SECRET&x=1"
	l.Debug("performing request", "method", "POST", "url", u)
	l.Error("request failed", "error", &url.Error{Op: "Post", URL: u, Err: errors.New("connection refused")})
	l.Info("note", "body", "refresh_token=1//SECRET&grant_type=refresh_token")
	for _, e := range logs.All() {
		for k, v := range e.ContextMap() {
			s, _ := v.(string)
			require.NotContains(t, s, "SECRET", "field %s", k)
		}
	}
	require.Equal(t, "https://graph.facebook.com/v25.0/123/events?REDACTED", logs.All()[0].ContextMap()["url"])
}

func TestCheckRetry(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code       int
		retryAfter string
		want       bool
	}{
		{200, "", false},
		{400, "", false},
		{401, "", false},
		{408, "", true},
		{429, "", true},
		{429, "1", true},
		{429, "3600", false},
		{500, "", true},
		{501, "", false},
		{502, "", true},
		{503, "120", false},
	}
	for _, tt := range tests {
		var n throttleCount
		resp := &http.Response{StatusCode: tt.code, Header: http.Header{}}
		if tt.retryAfter != "" {
			resp.Header.Set("Retry-After", tt.retryAfter)
		}
		got, err := checkRetry(10*time.Second, &n)(t.Context(), resp, nil)
		require.NoError(t, err)
		require.Equal(t, tt.want, got, "status %d Retry-After %q", tt.code, tt.retryAfter)
		if tt.code == 429 {
			require.EqualValues(t, 1, n)
		}
	}
}

type throttleCount float64

func (c *throttleCount) Add(v float64) { *c += throttleCount(v) }

func TestBackoffHonoursRetryAfterElseJitteredExponential(t *testing.T) {
	t.Parallel()
	var spent throttleCount
	b := backoff(&spent)
	resp := &http.Response{StatusCode: 429, Header: http.Header{"Retry-After": []string{"2"}}}
	require.Equal(t, 2*time.Second, b(time.Millisecond, 10*time.Second, 0, resp))
	for attempt := range 5 {
		d := b(100*time.Millisecond, time.Second, attempt, &http.Response{StatusCode: 502})
		nominal := min(100*time.Millisecond<<attempt, time.Second)
		require.GreaterOrEqual(t, d, nominal/2)
		require.LessOrEqual(t, d, nominal)
	}
	require.Greater(t, float64(spent), 2.0)
}

package microsoft

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
	"github.com/closedloop/closedloop/uploader/sandbox"
)

// A 401 on a cached token is a retry with a fresh token, not a pause.
func TestExpiredCachedTokenIsRefreshed(t *testing.T) {
	t.Parallel()
	sb := sandbox.New(sandbox.Options{}, zaptest.NewLogger(t), Sandbox)
	srv := httptest.NewServer(sb)
	defer srv.Close()
	p := New(uploader.DestinationConfig{Platform: "microsoft", BaseURL: srv.URL, Settings: &Settings{
		CustomerID: "1", CustomerAccountID: "2", DeveloperToken: "d", ClientID: "c", ClientSecret: "s", RefreshToken: "r", TokenURL: srv.URL + "/token",
	}}, srv.Client(), zaptest.NewLogger(t))
	row := []store.Conversion{{Key: "k", ConversionName: "Won", OccurredAt: time.Now().Add(-time.Hour),
		Identity: store.Identity{Clicks: []store.Click{{Type: "msclkid", ID: "abc"}}}}}
	send := func() error {
		req, err := p.BuildRequest(context.Background(), row, time.Now())
		require.NoError(t, err)
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		_, err = p.ParseResponse(resp, body, row)
		return err
	}
	require.NoError(t, send())
	first, err := p.tokens.AccessToken(context.Background())
	require.NoError(t, err)
	sb.SetFaults(sandbox.Faults{ExpiredToken: true})
	err = send()
	var e *uploader.Error
	require.True(t, errors.As(err, &e), "%v", err)
	require.Equal(t, uploader.ClassTransient, e.Class)
	require.True(t, e.Refreshed, "the dispatcher resends once at once")
	sb.SetFaults(sandbox.Faults{})
	require.NoError(t, send(), "the resend fetches a fresh token")
	now, err := p.tokens.AccessToken(context.Background())
	require.NoError(t, err)
	require.NotEqual(t, first, now)
}

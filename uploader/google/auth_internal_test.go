package google

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/uploader"
)

func TestTokensInvalidate(t *testing.T) {
	t.Parallel()
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"at-` + string(rune('0'+calls)) + `","expires_in":3600,"token_type":"Bearer"}`))
	}))
	defer srv.Close()
	cfg := &Settings{ClientID: "c", ClientSecret: "s", RefreshToken: "r", TokenURL: srv.URL}
	tk := newTokens(cfg, ScopeDataManager, srv.Client(), zaptest.NewLogger(t))

	a, err := tk.AccessToken(context.Background())
	require.NoError(t, err)
	b, err := tk.AccessToken(context.Background())
	require.NoError(t, err)
	require.Equal(t, a, b, "cached")
	require.Equal(t, 1, calls)

	require.False(t, tk.Invalidate(), "a 401 on a cached token may be an expiry: refresh and retry")
	c, err := tk.AccessToken(context.Background())
	require.NoError(t, err)
	require.NotEqual(t, a, c)
	require.True(t, tk.Invalidate(), "a 401 on the token fetched after that refusal means bad credentials")

	err = unauthorized(tk, parsed{})
	var te *uploader.Error
	require.True(t, errors.As(err, &te), "nothing cached any more: %v", err)
	require.Equal(t, uploader.ClassTransient, te.Class, "%v", err)
}

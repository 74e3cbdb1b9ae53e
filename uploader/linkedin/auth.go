package linkedin

import (
	"net/http"

	"go.uber.org/zap"

	"github.com/closedloop/closedloop/internal/oauthtoken"
)

// tokens holds the destination's access token: the configured fixed one, or one refreshed
// with a programmatic refresh token (internal/oauthtoken).
type tokens = oauthtoken.Tokens

func newTokens(s *Settings, client *http.Client, log *zap.Logger) *tokens {
	return oauthtoken.New(oauthtoken.Config{
		ClientID: s.ClientID, ClientSecret: s.ClientSecret, RefreshToken: s.RefreshToken,
		TokenURL: s.TokenURL, Fixed: s.AccessToken,
	}, client, log)
}

package microsoft

import (
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/closedloop/closedloop/internal/oauthtoken"
)

// tokens is the destination's Microsoft identity platform token cache (internal/oauthtoken).
type tokens = oauthtoken.Tokens

func newTokens(s *Settings, client *http.Client, log *zap.Logger) *tokens {
	return oauthtoken.New(oauthtoken.Config{
		ClientID: s.ClientID, ClientSecret: s.ClientSecret, RefreshToken: s.RefreshToken,
		TokenURL: s.TokenURL, Scopes: strings.Fields(s.Scope),
	}, client, log)
}

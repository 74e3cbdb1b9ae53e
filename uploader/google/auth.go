package google

import (
	"net/http"

	"go.uber.org/zap"

	"github.com/closedloop/closedloop/internal/oauthtoken"
)

// OAuth scopes of the two surfaces.
const (
	ScopeDataManager = "https://www.googleapis.com/auth/datamanager"
	ScopeAdWords     = "https://www.googleapis.com/auth/adwords"
)

// tokens is the destination's access-token cache (internal/oauthtoken).
type tokens = oauthtoken.Tokens

func newTokens(cfg *Settings, scope string, client *http.Client, log *zap.Logger) *tokens {
	return oauthtoken.New(oauthtoken.Config{
		ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, RefreshToken: cfg.RefreshToken,
		TokenURL: cfg.TokenURL, Scopes: []string{scope},
	}, client, log)
}

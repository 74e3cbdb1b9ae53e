package google

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/closedloop/closedloop/uploader"
)

// OAuth scopes per surface (platforms.md 1.1).
const (
	ScopeDataManager = "https://www.googleapis.com/auth/datamanager"
	ScopeAdWords     = "https://www.googleapis.com/auth/adwords"
)

// tokens caches one access token obtained with a refresh token. Safe for concurrent use.
type tokens struct {
	conf    oauth2.Config
	refresh string
	client  *http.Client
	log     *zap.Logger
	now     func() time.Time

	mu  sync.Mutex
	tok *oauth2.Token
	// refused: the last token was refused (401); fresh: the cached token was fetched
	// after such a refusal, so a 401 on it means the credentials themselves are bad.
	refused, fresh bool
}

func newTokens(cfg *Settings, scope string, client *http.Client, log *zap.Logger) *tokens {
	return &tokens{
		conf: oauth2.Config{
			ClientID:     cfg.ClientID,
			ClientSecret: cfg.ClientSecret,
			Endpoint:     oauth2.Endpoint{TokenURL: cfg.TokenURL, AuthStyle: oauth2.AuthStyleInParams},
			Scopes:       []string{scope},
		},
		refresh: cfg.RefreshToken,
		client:  client,
		log:     log,
		now:     time.Now,
	}
}

// AccessToken returns a valid access token, refreshing it with ctx when needed. Errors are
// *uploader.SetupError (the refresh token or client was refused) or
// *uploader.TransientError (the token endpoint failed or could not be reached).
func (t *tokens) AccessToken(ctx context.Context) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tok.Valid() {
		return t.tok.AccessToken, nil
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, t.client)
	tok, err := t.conf.TokenSource(ctx, &oauth2.Token{RefreshToken: t.refresh}).Token()
	if err != nil {
		return "", classifyTokenError(err)
	}
	t.tok, t.fresh, t.refused = tok, t.refused, false
	t.log.Debug("oauth access token refreshed", zap.Time("expiry", tok.Expiry))
	return tok.AccessToken, nil
}

// Invalidate drops the cached token after the API answered 401. It reports whether the
// token had been obtained after an earlier refusal, in which case refreshing again will
// not help: only a 401 on a freshly obtained token means bad credentials. A routine
// expiry (or a token revoked early) costs one refresh and one resend, never a pause.
func (t *tokens) Invalidate() (wasFresh bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	wasFresh = t.tok != nil && t.fresh
	t.tok, t.fresh, t.refused = nil, false, true
	return wasFresh
}

// classifyTokenError never includes the token endpoint's raw body (it may echo request
// parameters); only the OAuth error code and description.
func classifyTokenError(err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		code := re.ErrorCode
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		detail := strings.TrimSpace(code + " " + re.ErrorDescription)
		switch {
		case code == "invalid_grant", code == "invalid_client", code == "unauthorized_client",
			code == "invalid_scope", code == "access_denied":
			return &uploader.Error{Class: uploader.ClassSetup, Reason: "oauth_" + code, Detail: "token refresh refused: " + detail}
		case status == http.StatusTooManyRequests || status >= 500:
			return &uploader.Error{Class: uploader.ClassTransient, Reason: "oauth_unavailable", Detail: "token endpoint answered " + http.StatusText(status)}
		case status >= 400:
			return &uploader.Error{Class: uploader.ClassSetup, Reason: "oauth_refused", Detail: "token endpoint answered " + http.StatusText(status) + " " + detail}
		}
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	return &uploader.Error{Class: uploader.ClassTransient, Reason: "oauth_unreachable", Detail: "token refresh failed: " + errorClass(err)}
}

// errorClass describes a transport error without its URL.
func errorClass(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + ": " + ue.Err.Error()
	}
	return err.Error()
}

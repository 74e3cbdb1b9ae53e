package microsoft

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

// freshFor is how long after a refresh a credential refusal means the credentials
// themselves are bad rather than the access token having expired.
const freshFor = time.Minute

// tokens caches one access token obtained with a refresh token from the Microsoft identity
// platform. Safe for concurrent use.
type tokens struct {
	conf    oauth2.Config
	refresh string
	client  *http.Client
	log     *zap.Logger
	now     func() time.Time

	mu        sync.Mutex
	tok       *oauth2.Token
	fetchedAt time.Time
}

func newTokens(s *Settings, client *http.Client, log *zap.Logger) *tokens {
	return &tokens{
		conf: oauth2.Config{
			ClientID:     s.ClientID,
			ClientSecret: s.ClientSecret,
			Endpoint:     oauth2.Endpoint{TokenURL: s.TokenURL, AuthStyle: oauth2.AuthStyleInParams},
			Scopes:       strings.Fields(s.Scope),
		},
		refresh: s.RefreshToken,
		client:  client,
		log:     log,
		now:     time.Now,
	}
}

// AccessToken returns a valid access token, refreshing it with ctx when needed. Errors are
// *uploader.Error: setup (the refresh token or client was refused) or transient (the token
// endpoint failed or could not be reached).
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
	if tok.RefreshToken != "" {
		// The identity platform may rotate the refresh token; keep the newest for this run.
		t.refresh = tok.RefreshToken
	}
	t.tok, t.fetchedAt = tok, t.now()
	t.log.Debug("oauth access token refreshed", zap.Time("expiry", tok.Expiry))
	return tok.AccessToken, nil
}

// Invalidate drops the cached token after the API refused it. It reports whether the token
// had just been refreshed, in which case refreshing again will not help.
func (t *tokens) Invalidate() (wasFresh bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	wasFresh = t.tok != nil && t.now().Sub(t.fetchedAt) < freshFor
	t.tok = nil
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
		detail := strings.TrimSpace(code + " " + firstLine(re.ErrorDescription))
		switch {
		case code == "invalid_grant", code == "invalid_client", code == "unauthorized_client",
			code == "invalid_scope", code == "access_denied", code == "consent_required", code == "interaction_required":
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
	return &uploader.Error{Class: uploader.ClassTransient, Reason: "oauth_unreachable", Detail: "token refresh failed: " + transportError(err)}
}

// firstLine keeps the identity platform's AADSTS description to its first line (the rest
// carries trace and correlation ids).
func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return uploader.Truncate(strings.TrimSpace(s), 200)
}

// transportError describes a transport error without its URL.
func transportError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + ": " + ue.Err.Error()
	}
	return err.Error()
}

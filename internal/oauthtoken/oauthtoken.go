// Package oauthtoken caches one OAuth access token obtained with a refresh token (through
// golang.org/x/oauth2) for the platform packages that need one (Google, Microsoft,
// LinkedIn), and says when a refused token means bad credentials rather than an expiry.
//
// The rule: a 401 on a cached token may be a routine expiry (or an early revocation), so
// Invalidate reports false and the caller refreshes and resends once; only a 401 on the token
// fetched right after such a refusal means the credentials themselves are bad (Invalidate
// reports true: pause). Errors never carry the token endpoint's raw body, a token or a
// secret. Depends on: uploader (the *uploader.Error it returns), x/oauth2, zap.
package oauthtoken

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/closedloop/closedloop/uploader"
)

// Config is one credential.
type Config struct {
	ClientID, ClientSecret, RefreshToken, TokenURL string
	Scopes                                         []string
	// Fixed is a configured access token used as is (no refresh); a refusal of it is
	// always bad credentials.
	Fixed string
}

// Tokens caches one access token. Safe for concurrent use.
type Tokens struct {
	conf   oauth2.Config
	client *http.Client
	log    *zap.Logger
	fixed  string

	mu      sync.Mutex
	refresh string
	tok     *oauth2.Token
	// refused: the last token was refused; fresh: the cached token was fetched after such
	// a refusal, so a refusal of it means the credentials are bad.
	refused, fresh bool
}

// New returns the cache; client is used for the token endpoint.
func New(c Config, client *http.Client, log *zap.Logger) *Tokens {
	return &Tokens{
		conf: oauth2.Config{
			ClientID: c.ClientID, ClientSecret: c.ClientSecret, Scopes: c.Scopes,
			Endpoint: oauth2.Endpoint{TokenURL: c.TokenURL, AuthStyle: oauth2.AuthStyleInParams},
		},
		refresh: c.RefreshToken, fixed: c.Fixed, client: client, log: log,
	}
}

// AccessToken returns a valid access token, refreshing it with ctx when needed. Errors are
// *uploader.Error: setup (the refresh token or client was refused) or transient (the token
// endpoint failed or could not be reached); a cancelled ctx is returned as is.
func (t *Tokens) AccessToken(ctx context.Context) (string, error) {
	if t.fixed != "" {
		return t.fixed, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tok.Valid() {
		return t.tok.AccessToken, nil
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, t.client)
	tok, err := t.conf.TokenSource(ctx, &oauth2.Token{RefreshToken: t.refresh}).Token()
	if err != nil {
		return "", classify(err)
	}
	if tok.RefreshToken != "" {
		t.refresh = tok.RefreshToken // a rotated refresh token is kept for this run
	}
	t.tok, t.fresh, t.refused = tok, t.refused, false
	t.log.Debug("oauth access token refreshed", zap.Time("expiry", tok.Expiry))
	return tok.AccessToken, nil
}

// Invalidate drops the cached token after the API refused it. It reports whether the token
// was fetched after an earlier refusal (or is the fixed one): refreshing again will not help.
func (t *Tokens) Invalidate() (wasFresh bool) {
	if t.fixed != "" {
		return true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	wasFresh = t.tok != nil && t.fresh
	t.tok, t.fresh, t.refused = nil, false, true
	return wasFresh
}

// classify maps a refresh failure to the uploader's classes, keeping only the OAuth error
// code and the first line of its description.
func classify(err error) error {
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
			code == "invalid_scope", code == "access_denied", code == "invalid_request":
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

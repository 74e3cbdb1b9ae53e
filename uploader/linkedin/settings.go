package linkedin

import (
	"fmt"
	"net/url"
	"regexp"
	"time"

	"go.uber.org/zap"

	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
)

// Name is the platform name (a destination's `platform` key).
const Name = "linkedin"

// Spec is the LinkedIn Conversions API as the registry lists it (platforms.md §5,
// platforms-2026-12.md §2.6 for the versions).
func Spec() uploader.Spec {
	return uploader.Spec{
		Name:            Name,
		API:             "the LinkedIn Conversions API",
		MaxBatch:        MaxBatch,
		DefaultBaseURL:  "https://api.linkedin.com",
		Versions:        versions,
		ConversionNoun:  "conversion rule",
		CheckConversion: checkRuleID,
		Usable:          Usable,
		Sandbox:         Sandbox,
		Hashes:          hashes,
		NewSettings:     func() uploader.Settings { return &Settings{} },
		New: func(name string, d uploader.DestinationConfig, log *zap.Logger) (uploader.Platform, error) {
			return New(d, nil, log), nil
		},
	}
}

// versions are the LinkedIn-Version values this package sends, newest first. The
// conversionEvents body is the same on all of them. Sunsets are LinkedIn's published ones
// (migrations page, platforms-2026-12.md §2.6); 202604–202608 have none announced yet
// (each version lives at least 12 months), so none is set. 202608 is the newest in the
// stored docs.
var versions = []uploader.Version{
	{Name: "202608"}, {Name: "202607"}, {Name: "202606"}, {Name: "202605"}, {Name: "202604"},
	{Name: "202603", Sunset: day(2027, 3, 16)},
	{Name: "202602", Sunset: day(2027, 2, 15)},
	{Name: "202601", Sunset: day(2027, 1, 15)},
	{Name: "202511", Sunset: day(2026, 11, 16)},
	{Name: "202510", Sunset: day(2026, 10, 15)},
}

func day(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }

// MaxBatch is the most elements one BATCH_CREATE carries.
const MaxBatch = 5000

// MaxAge is how old conversionHappenedAt may be: LinkedIn takes events of the last 90 days.
const MaxAge = 90 * 24 * time.Hour

// AgeMargin is kept off MaxAge so a row checked now is still inside the window on arrival.
const AgeMargin = time.Hour

// FutureSkew is how far ahead of now a CRM change time may be before the row waits.
const FutureSkew = time.Minute

// hashes: SHA256_EMAIL is the trimmed, lower-cased email (LinkedIn's own normalization is
// UNCONFIRMED, platforms.md 5.7; integrations trim and lower-case). LinkedIn takes no phone.
var hashes = map[pii.Field]string{pii.Email: pii.KeyEmail}

// Settings are a LinkedIn destination's own keys: either a fixed access_token, or a
// programmatic refresh token with its app's client id and secret.
type Settings struct {
	AccessToken  string `yaml:"access_token"` // a token with rw_conversions; paused when it expires
	ClientID     string `yaml:"client_id"`
	ClientSecret string `yaml:"client_secret"`
	RefreshToken string `yaml:"refresh_token"`
	TokenURL     string `yaml:"token_url"` // default https://www.linkedin.com/oauth/v2/accessToken
}

// Defaults sets LinkedIn's token endpoint.
func (s *Settings) Defaults() {
	if s.TokenURL == "" {
		s.TokenURL = "https://www.linkedin.com/oauth/v2/accessToken"
	}
}

// Validate checks that exactly one way to authenticate is configured (never echoing a
// secret) and the token URL.
func (s *Settings) Validate(path string, d uploader.DestinationConfig) []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: "+format, append([]any{path, field}, args...)...))
	}
	refresh := s.ClientID != "" || s.ClientSecret != "" || s.RefreshToken != ""
	switch {
	case s.AccessToken != "" && refresh:
		bad("access_token", "set either access_token or client_id/client_secret/refresh_token, not both")
	case s.AccessToken == "" && !refresh:
		bad("access_token", "required for %s (or client_id, client_secret and refresh_token)", d.Platform)
	case refresh:
		for _, f := range []struct{ key, v string }{{"client_id", s.ClientID}, {"client_secret", s.ClientSecret}, {"refresh_token", s.RefreshToken}} {
			if f.v == "" {
				bad(f.key, "required with a refresh token")
			}
		}
	}
	if u, err := url.Parse(s.TokenURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("token_url", "must be an absolute http(s) URL, got %q", s.TokenURL)
	}
	return errs
}

// WithPlaceholders returns a copy with every credential replaced and OAuth at tokenURL.
func (s *Settings) WithPlaceholders(secret, tokenURL string) uploader.Settings {
	c := *s
	if c.AccessToken != "" {
		c.AccessToken = secret
	} else {
		c.ClientID, c.ClientSecret, c.RefreshToken = secret, secret, secret
	}
	c.TokenURL = tokenURL
	return &c
}

// Usable reports whether id carries a li_fat_id click or a hashed email: the user ids
// closedloop sends. Check refuses rows without one.
func Usable(id store.Identity) bool {
	return liFatID(id) != "" || id.Identifiers.Get(pii.KeyEmail) != ""
}

func liFatID(id store.Identity) string {
	for _, c := range id.Clicks {
		if c.Type == "li_fat_id" && c.ID != "" {
			return c.ID
		}
	}
	return ""
}

var ruleID = regexp.MustCompile(`^[0-9]+$`)

// checkRuleID accepts the numeric id of a conversion rule (created with conversionMethod
// CONVERSIONS_API); the package sends urn:lla:llaPartnerConversion:<id>.
func checkRuleID(name string) error {
	if !ruleID.MatchString(name) {
		return fmt.Errorf("%q must be the numeric LinkedIn conversion rule id", name)
	}
	return nil
}

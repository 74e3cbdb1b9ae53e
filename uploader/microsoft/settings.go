package microsoft

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
)

// Name is the platform name (a destination's `platform` key).
const Name = "microsoft"

// Spec is Microsoft Advertising offline conversions as the registry lists it (platforms.md
// §4; platforms-2026-12.md §2.5 for REST over SOAP).
func Spec() uploader.Spec {
	return uploader.Spec{
		Name:           Name,
		API:            "the Microsoft Advertising Campaign Management API",
		MaxBatch:       MaxBatch,
		DefaultBaseURL: "https://campaign.api.bingads.microsoft.com",
		// v13 is the only Campaign Management version; the REST surface has no announced
		// sunset (the 2027-01-31 date is SOAP's).
		Versions: []uploader.Version{{Name: "v13"}},
		// OfflineConversionAdjustments/Apply: Retract and Restate (adjustments.go).
		Retracts:        true,
		Restates:        true,
		ConversionNoun:  "offline conversion goal",
		CheckConversion: checkGoalName,
		Usable:          Usable,
		Sandbox:         Sandbox,
		Hashes:          hashes,
		NewSettings:     func() uploader.Settings { return &Settings{} },
		New: func(name string, d uploader.DestinationConfig, log *zap.Logger) (uploader.Platform, error) {
			return New(d, nil, log), nil
		},
	}
}

// MaxBatch is the most offline conversions one Apply call carries: "a maximum of 1,000
// offline conversions per service request" (ApplyOfflineConversions, Campaign Management
// v13 reference). platforms.md lists the limit as UNCONFIRMED; 1,000 is also the commonly
// cited figure, and OfflineConversionBatchSizeExceedsLimit is bisected should it be lower.
const MaxBatch = 1000

// MaxAge is how old ConversionTime may be when Microsoft receives it ("must be within the
// last 90 days, otherwise the operation will fail").
const MaxAge = 90 * 24 * time.Hour

// AgeMargin is kept off MaxAge so a row checked now is still inside the window when the
// request arrives.
const AgeMargin = time.Hour

// GoalWait is how long after an offline conversion goal is created Microsoft takes
// conversions for it ("wait two hours").
const GoalWait = 2 * time.Hour

// FutureSkew is how far ahead of now a CRM change time may be before the row waits
// (FutureConversionTimeCannotBeSet): a CRM clock slightly ahead of ours.
const FutureSkew = time.Minute

// Hashes: email trimmed and lower-cased, phone E.164 with the + (HashedPhoneNumber is
// "hashed ... according to the E.164 standard"). Microsoft's exact normalization is
// UNCONFIRMED (platforms.md 4.7); these are the forms its documentation names.
var hashes = map[pii.Field]string{pii.Email: pii.KeyEmail, pii.Phone: pii.KeyPhoneE164}

// Settings are a Microsoft Advertising destination's own keys.
type Settings struct {
	CustomerID        string `yaml:"customer_id"`         // the manager (customer) id, sent as CustomerId
	CustomerAccountID string `yaml:"customer_account_id"` // the ad account id, sent as CustomerAccountId
	DeveloperToken    string `yaml:"developer_token"`
	ClientID          string `yaml:"client_id"`     // the Microsoft identity platform app (client) id
	ClientSecret      string `yaml:"client_secret"` // empty for a public (native) client
	RefreshToken      string `yaml:"refresh_token"`
	TokenURL          string `yaml:"token_url"` // default https://login.microsoftonline.com/common/oauth2/v2.0/token
	Scope             string `yaml:"scope"`     // default https://ads.microsoft.com/msads.manage offline_access
}

// Defaults sets the Microsoft identity platform token endpoint and scope.
func (s *Settings) Defaults() {
	if s.TokenURL == "" {
		s.TokenURL = "https://login.microsoftonline.com/common/oauth2/v2.0/token"
	}
	if s.Scope == "" {
		s.Scope = "https://ads.microsoft.com/msads.manage offline_access"
	}
}

var digitsOnly = regexp.MustCompile(`^[0-9]+$`)

// Validate checks the account ids, that credentials are set (never echoing them) and the
// token URL.
func (s *Settings) Validate(path string, d uploader.DestinationConfig) []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: "+format, append([]any{path, field}, args...)...))
	}
	if !digitsOnly.MatchString(s.CustomerID) {
		bad("customer_id", "must be the numeric Microsoft Advertising customer id, got %q", s.CustomerID)
	}
	if !digitsOnly.MatchString(s.CustomerAccountID) {
		bad("customer_account_id", "must be the numeric Microsoft Advertising account id, got %q", s.CustomerAccountID)
	}
	for _, f := range []struct{ key, v string }{{"developer_token", s.DeveloperToken}, {"client_id", s.ClientID}, {"refresh_token", s.RefreshToken}} {
		if f.v == "" {
			bad(f.key, "required for %s", d.Platform)
		}
	}
	if u, err := url.Parse(s.TokenURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("token_url", "must be an absolute http(s) URL, got %q", s.TokenURL)
	}
	if strings.TrimSpace(s.Scope) == "" {
		bad("scope", "must not be blank")
	}
	return errs
}

// WithPlaceholders returns a copy with every credential replaced and OAuth at tokenURL.
func (s *Settings) WithPlaceholders(secret, tokenURL string) uploader.Settings {
	c := *s
	c.DeveloperToken, c.ClientID, c.ClientSecret, c.RefreshToken, c.TokenURL = secret, secret, secret, secret, tokenURL
	return &c
}

// Usable reports whether id carries an msclkid, or a hashed email or phone (enhanced
// conversions: "the MSCLKID is optional when you provide a hashed email address or phone
// number"). Check refuses rows without one.
func Usable(id store.Identity) bool {
	if clickID(id) != "" {
		return true
	}
	return id.Identifiers.Get(pii.KeyEmail) != "" || id.Identifiers.Get(pii.KeyPhoneE164) != ""
}

// clickID is the msclkid of the identity ("" for none); the join keeps the latest of each
// click type before the conversion.
func clickID(id store.Identity) string {
	for _, c := range id.Clicks {
		if c.Type == "msclkid" && c.ID != "" {
			return c.ID
		}
	}
	return ""
}

// checkGoalName accepts an offline conversion goal name: Microsoft matches ConversionName
// to the goal's name exactly, so surrounding spaces would never match.
func checkGoalName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("the offline conversion goal name is empty")
	case strings.TrimSpace(name) != name:
		return fmt.Errorf("%q has surrounding spaces; Microsoft matches the goal name exactly", name)
	}
	return nil
}

package google

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"time"

	"go.uber.org/zap"

	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
)

// DataManagerName is the Data Manager platform name (a destination's `platform` key).
const DataManagerName = "google"

// AdsName is the Google Ads API platform name.
const AdsName = "google_ads"

// MaxClickWindow is the longest click-through window a Google conversion action may have.
const MaxClickWindow = 90 * 24 * time.Hour

// hashes are the pii.Set keys both Google surfaces read.
var hashes = map[pii.Field]string{
	pii.Email: pii.KeyEmailCanonical, pii.Phone: pii.KeyPhoneE164,
	pii.FirstName: pii.KeyFirstNameNoTitle, pii.LastName: pii.KeyLastNameNoSuffix,
}

// clearForms: Google takes the address parts unhashed, the country as its upper-case code.
var clearForms = map[pii.Field]string{
	pii.City: pii.KeyCity, pii.State: pii.KeyState, pii.Zip: pii.KeyZip, pii.Country: pii.CountryCodeKey,
}

// DataManagerSpec is the Data Manager API `events:ingest` (platform "google"; platforms.md
// §1). Its path is always v1.
func DataManagerSpec() uploader.Spec {
	return uploader.Spec{
		Name:           DataManagerName,
		API:            "the Google Data Manager API",
		MaxBatch:       MaxBatch,
		DefaultBaseURL: "https://datamanager.googleapis.com",
		// Re-sending a transactionId with a new value is Data Manager's adjustment
		// (platforms.md §1.6); it has no retraction.
		Restates:        true,
		ConversionNoun:  "conversion action",
		CheckConversion: checkActionID,
		Usable:          Usable,
		Sandbox:         DataManagerSandbox,
		Hashes:          hashes,
		Clear:           clearForms,
		NewSettings:     func() uploader.Settings { return &Settings{} },
		New: func(name string, d uploader.DestinationConfig, log *zap.Logger) (uploader.Platform, error) {
			return NewDataManager(d, nil, log), nil
		},
	}
}

// AdsSpec is the Google Ads API `uploadClickConversions` / `uploadConversionAdjustments`
// (platform "google_ads"; platforms.md §1, platforms-2026-12.md for the sunsets).
func AdsSpec() uploader.Spec {
	return uploader.Spec{
		Name:           AdsName,
		API:            "the Google Ads API",
		MaxBatch:       MaxBatch,
		DefaultBaseURL: "https://googleads.googleapis.com",
		// Newest first. v25 is the newest the request bodies are checked against (the official
		// protos in roundtrip_test). v23-v25 sunsets are only projected (Feb, May, Aug 2027),
		// not announced: none is set until Google announces them.
		Versions:        adsVersions,
		Retracts:        true, // RETRACTION by orderId
		Restates:        true, // RESTATEMENT by orderId
		ResolvesNames:   true,
		ConversionNoun:  "conversion action",
		CheckConversion: checkActionID,
		Usable:          Usable,
		Sandbox:         AdsSandbox,
		Hashes:          hashes,
		Clear:           clearForms,
		NewSettings:     func() uploader.Settings { return &Settings{} },
		New: func(name string, d uploader.DestinationConfig, log *zap.Logger) (uploader.Platform, error) {
			return NewAdsAPI(d, nil, log), nil
		},
	}
}

// MaxBatch is the most events (or adjustments) one request of either surface carries.
const MaxBatch = 2000

var adsVersions = []uploader.Version{
	{Name: "v25"}, {Name: "v24"}, {Name: "v23"},
	{Name: "v22", Sunset: time.Date(2026, 10, 7, 0, 0, 0, 0, time.UTC)},
}

// Settings are a Google destination's own keys (both surfaces).
type Settings struct {
	CustomerID      string        `yaml:"customer_id"`       // operating account, 10 digits
	LoginCustomerID string        `yaml:"login_customer_id"` // manager account, 10 digits
	ClientID        string        `yaml:"client_id"`
	ClientSecret    string        `yaml:"client_secret"`
	RefreshToken    string        `yaml:"refresh_token"`
	TokenURL        string        `yaml:"token_url"`     // default https://oauth2.googleapis.com/token
	ClickWindow     time.Duration `yaml:"click_window"`  // the conversion action's click-through window, max 90d
	ValidateOnly    bool          `yaml:"validate_only"` // validate, do not upload
}

// Defaults sets the token URL and the 90-day click window.
func (s *Settings) Defaults() {
	if s.TokenURL == "" {
		s.TokenURL = "https://oauth2.googleapis.com/token"
	}
	if s.ClickWindow == 0 {
		s.ClickWindow = MaxClickWindow
	}
}

var tenDigits = regexp.MustCompile(`^[0-9]{10}$`)

// Validate checks the account ids, that credentials are set (never echoing them), the token
// URL and the click window.
func (s *Settings) Validate(path string, d uploader.DestinationConfig) []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: "+format, append([]any{path, field}, args...)...))
	}
	if !tenDigits.MatchString(s.CustomerID) {
		bad("customer_id", "must be 10 digits, got %q", s.CustomerID)
	}
	if s.LoginCustomerID != "" && !tenDigits.MatchString(s.LoginCustomerID) {
		bad("login_customer_id", "must be 10 digits, got %q", s.LoginCustomerID)
	}
	for _, f := range []struct{ key, v string }{{"client_id", s.ClientID}, {"client_secret", s.ClientSecret}, {"refresh_token", s.RefreshToken}} {
		if f.v == "" {
			bad(f.key, "required for %s", d.Platform)
		}
	}
	if u, err := url.Parse(s.TokenURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("token_url", "must be an absolute http(s) URL, got %q", s.TokenURL)
	}
	if s.ClickWindow <= 0 || s.ClickWindow > MaxClickWindow {
		bad("click_window", "must be between 1s and 90d (2160h), got %s", s.ClickWindow)
	}
	return errs
}

func checkActionID(name string) error {
	if !numericID.MatchString(name) {
		return fmt.Errorf("%q must be the numeric Google conversion action id", name)
	}
	return nil
}

// Usable reports whether id carries a gclid, gbraid or wbraid, or a hashed email or phone:
// what both Google surfaces match on. Check refuses rows without one.
func Usable(id store.Identity) bool {
	if _, ok := pickClick(id.Clicks); ok {
		return true
	}
	return id.Identifiers.Get(pii.KeyEmailCanonical) != "" || id.Identifiers.Get(pii.KeyPhoneE164) != ""
}

// settingsOf returns d's Google settings (defaults applied) and a token-endpoint client.
func settingsOf(d uploader.DestinationConfig, client *http.Client) (*Settings, *http.Client) {
	set, _ := d.Settings.(*Settings)
	if set == nil {
		set = &Settings{}
		set.Defaults()
	}
	if client == nil {
		client = &http.Client{Timeout: d.Timeout}
	}
	return set, client
}

// WithPlaceholders returns a copy with every credential replaced and OAuth at tokenURL.
func (s *Settings) WithPlaceholders(secret, tokenURL string) uploader.Settings {
	c := *s
	c.ClientID, c.ClientSecret, c.RefreshToken, c.TokenURL = secret, secret, secret, tokenURL
	return &c
}

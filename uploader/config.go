package uploader

import (
	"fmt"
	"net/url"
	"regexp"
	"time"
)

// Platform names as written in a destination's `platform` key.
const (
	PlatformGoogle    = "google"     // Google Data Manager API events:ingest
	PlatformGoogleAds = "google_ads" // Google Ads API uploadClickConversions / uploadConversionAdjustments
	PlatformMeta      = "meta"       // Meta Conversions API
	PlatformTikTok    = "tiktok"     // TikTok Events API 2.0
)

// Per-request row limits of each platform (platforms.md section 6).
const (
	MaxBatchGoogle    = 2000
	MaxBatchGoogleAds = 2000
	MaxBatchMeta      = 1000
	MaxBatchTikTok    = 1000
)

// MaxClickWindow is the longest click-through window a Google conversion action may have.
const MaxClickWindow = 90 * 24 * time.Hour

// DestinationConfig is one entry of the config's `destinations` map: one account on one
// platform. Platform-specific fields are ignored by other platforms; Validate says which
// ones each platform requires. Call WithDefaults before Validate.
type DestinationConfig struct {
	Platform string `yaml:"platform"` // google (Data Manager) | google_ads | meta | tiktok
	BaseURL  string `yaml:"base_url"` // the platform's API root; the sandbox's URL in tests
	Enabled  *bool  `yaml:"enabled"`  // default true

	// Dispatch.
	BatchSize     int           `yaml:"batch_size"`      // default and maximum: the platform's limit
	RatePerSecond float64       `yaml:"rate_per_second"` // requests per second; 0 = unlimited
	Burst         int           `yaml:"burst"`
	MaxAttempts   int           `yaml:"max_attempts"` // then the row ends failed
	Timeout       time.Duration `yaml:"timeout"`      // per HTTP request
	ReplayShare   float64       `yaml:"replay_share"` // max share of a batch for replay rows
	ValidateOnly  bool          `yaml:"validate_only"`
	TestEventCode string        `yaml:"test_event_code"` // Meta / TikTok test mode

	// APIVersion is the versioned path segment: google_ads "v25" (default), meta "v25.0"
	// (default). Data Manager is always v1 and TikTok v1.3.
	APIVersion string `yaml:"api_version"`

	// Google (Data Manager and Ads API).
	CustomerID      string        `yaml:"customer_id"`       // operating account, 10 digits
	LoginCustomerID string        `yaml:"login_customer_id"` // manager account, 10 digits
	ClientID        string        `yaml:"client_id"`
	ClientSecret    string        `yaml:"client_secret"`
	RefreshToken    string        `yaml:"refresh_token"`
	TokenURL        string        `yaml:"token_url"`    // default https://oauth2.googleapis.com/token
	ClickWindow     time.Duration `yaml:"click_window"` // conversion action click-through window, max 90d

	// Meta.
	DatasetID       string `yaml:"dataset_id"`
	AccessToken     string `yaml:"access_token"`      // Meta access_token / TikTok Access-Token
	LeadEventSource string `yaml:"lead_event_source"` // CRM name for Meta/TikTok lead events; default: the row's source

	// TikTok.
	EventSourceID string `yaml:"event_source_id"` // CRM event set ID
}

// defaultBaseURLs are the production API roots.
var defaultBaseURLs = map[string]string{
	PlatformGoogle:    "https://datamanager.googleapis.com",
	PlatformGoogleAds: "https://googleads.googleapis.com",
	PlatformMeta:      "https://graph.facebook.com",
	PlatformTikTok:    "https://business-api.tiktok.com",
}

// MaxBatchFor returns the platform's per-request row limit, 0 for an unknown platform.
func MaxBatchFor(platform string) int {
	switch platform {
	case PlatformGoogle:
		return MaxBatchGoogle
	case PlatformGoogleAds:
		return MaxBatchGoogleAds
	case PlatformMeta:
		return MaxBatchMeta
	case PlatformTikTok:
		return MaxBatchTikTok
	}
	return 0
}

// IsEnabled reports whether the destination should upload (Enabled nil means true).
func (d DestinationConfig) IsEnabled() bool { return d.Enabled == nil || *d.Enabled }

// WithDefaults returns d with every unset option filled in. It never overrides a set value,
// so Validate still sees (and names) a bad one.
func (d DestinationConfig) WithDefaults() DestinationConfig {
	if d.Enabled == nil {
		t := true
		d.Enabled = &t
	}
	if d.BaseURL == "" {
		d.BaseURL = defaultBaseURLs[d.Platform]
	}
	if d.BatchSize == 0 {
		d.BatchSize = MaxBatchFor(d.Platform)
	}
	if d.Burst == 0 {
		d.Burst = 1
	}
	if d.MaxAttempts == 0 {
		d.MaxAttempts = 10
	}
	if d.Timeout == 0 {
		d.Timeout = 60 * time.Second
	}
	if d.ReplayShare == 0 {
		d.ReplayShare = 0.5
	}
	switch d.Platform {
	case PlatformGoogle, PlatformGoogleAds:
		if d.TokenURL == "" {
			d.TokenURL = "https://oauth2.googleapis.com/token"
		}
		if d.ClickWindow == 0 {
			d.ClickWindow = MaxClickWindow
		}
		if d.Platform == PlatformGoogleAds && d.APIVersion == "" {
			d.APIVersion = "v25"
		}
	case PlatformMeta:
		if d.APIVersion == "" {
			d.APIVersion = "v25.0"
		}
	}
	return d
}

var (
	tenDigits      = regexp.MustCompile(`^[0-9]{10}$`)
	digitsOnly     = regexp.MustCompile(`^[0-9]+$`)
	adsVersion     = regexp.MustCompile(`^v[0-9]+$`)
	graphVersion   = regexp.MustCompile(`^v[0-9]+\.[0-9]+$`)
	notSecretShown = "(value not shown)"
)

// Validate reports every problem in d, each prefixed with its YAML path under path (for
// example `destinations.google-main.customer_id: must be 10 digits, got "123-456"`). Secrets
// (client_secret, refresh_token, access_token) are never echoed.
func (d DestinationConfig) Validate(path string) []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: "+format, append([]any{path, field}, args...)...))
	}
	limit := MaxBatchFor(d.Platform)
	if limit == 0 {
		bad("platform", "must be google, google_ads, meta or tiktok, got %q", d.Platform)
	}
	if u, err := url.Parse(d.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("base_url", "must be an absolute http(s) URL, got %q", d.BaseURL)
	}
	if limit > 0 && (d.BatchSize < 1 || d.BatchSize > limit) {
		bad("batch_size", "must be between 1 and %d for %s, got %d", limit, d.Platform, d.BatchSize)
	}
	if d.RatePerSecond < 0 {
		bad("rate_per_second", "must not be negative, got %v", d.RatePerSecond)
	}
	if d.Burst < 0 {
		bad("burst", "must not be negative, got %d", d.Burst)
	}
	if d.MaxAttempts < 1 {
		bad("max_attempts", "must be at least 1, got %d", d.MaxAttempts)
	}
	if d.Timeout <= 0 {
		bad("timeout", "must be positive, got %s", d.Timeout)
	}
	if d.ReplayShare < 0 || d.ReplayShare > 1 {
		bad("replay_share", "must be between 0 and 1, got %v", d.ReplayShare)
	}
	google := d.Platform == PlatformGoogle || d.Platform == PlatformGoogleAds
	if d.ValidateOnly && !google {
		bad("validate_only", "only Google platforms have a validate-only mode; use test_event_code for %s", d.Platform)
	}
	if d.TestEventCode != "" && google {
		bad("test_event_code", "Google has no test event code; use validate_only")
	}
	switch d.Platform {
	case PlatformGoogle, PlatformGoogleAds:
		if !tenDigits.MatchString(d.CustomerID) {
			bad("customer_id", "must be 10 digits, got %q", d.CustomerID)
		}
		if d.LoginCustomerID != "" && !tenDigits.MatchString(d.LoginCustomerID) {
			bad("login_customer_id", "must be 10 digits, got %q", d.LoginCustomerID)
		}
		if d.ClientID == "" {
			bad("client_id", "required for %s", d.Platform)
		}
		if d.ClientSecret == "" {
			bad("client_secret", "required for %s", d.Platform)
		}
		if d.RefreshToken == "" {
			bad("refresh_token", "required for %s", d.Platform)
		}
		if u, err := url.Parse(d.TokenURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("token_url", "must be an absolute http(s) URL, got %q", d.TokenURL)
		}
		if d.ClickWindow <= 0 || d.ClickWindow > MaxClickWindow {
			bad("click_window", "must be between 1s and 90d (2160h), got %s", d.ClickWindow)
		}
		if d.Platform == PlatformGoogleAds && !adsVersion.MatchString(d.APIVersion) {
			bad("api_version", `must look like "v25", got %q`, d.APIVersion)
		}
	case PlatformMeta:
		if !digitsOnly.MatchString(d.DatasetID) {
			bad("dataset_id", "must be the numeric dataset (pixel) ID, got %q", d.DatasetID)
		}
		if d.AccessToken == "" {
			bad("access_token", "required for meta")
		}
		if !graphVersion.MatchString(d.APIVersion) {
			bad("api_version", `must look like "v25.0", got %q`, d.APIVersion)
		}
	case PlatformTikTok:
		if !digitsOnly.MatchString(d.EventSourceID) {
			bad("event_source_id", "must be the numeric CRM event set ID, got %q", d.EventSourceID)
		}
		if d.AccessToken == "" {
			bad("access_token", "required for tiktok")
		}
	}
	if !google {
		if d.ClientSecret != "" {
			bad("client_secret", "only used by Google platforms %s", notSecretShown)
		}
		if d.RefreshToken != "" {
			bad("refresh_token", "only used by Google platforms %s", notSecretShown)
		}
	}
	return errs
}

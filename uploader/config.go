package uploader

import "time"

// DestinationConfig is one entry of the config's `destinations` map: one account on one
// platform. Platform-specific fields are ignored by other platforms; Validate says which
// ones each platform requires.
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

	// Google (Data Manager and Ads API).
	CustomerID      string        `yaml:"customer_id"`       // operating account, 10 digits
	LoginCustomerID string        `yaml:"login_customer_id"` // manager account, 10 digits
	ClientID        string        `yaml:"client_id"`
	ClientSecret    string        `yaml:"client_secret"`
	RefreshToken    string        `yaml:"refresh_token"`
	TokenURL        string        `yaml:"token_url"`
	ClickWindow     time.Duration `yaml:"click_window"` // conversion action click-through window, max 90d

	// Meta.
	DatasetID       string `yaml:"dataset_id"`
	AccessToken     string `yaml:"access_token"` // Meta access_token / TikTok Access-Token
	LeadEventSource string `yaml:"lead_event_source"`

	// TikTok.
	EventSourceID string `yaml:"event_source_id"`
}

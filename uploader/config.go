package uploader

import (
	"fmt"
	"net/url"
	"time"

	"gopkg.in/yaml.v3"
)

// DestinationConfig is one entry of the config's `destinations` map: one account on one
// platform. It holds the keys every platform shares; the platform's own keys sit beside
// them in the YAML and are decoded into Settings by DecodeSettings. Call WithDefaults
// before Validate.
type DestinationConfig struct {
	Platform string `yaml:"platform"` // a registered platform's Spec.Name
	BaseURL  string `yaml:"base_url"` // the platform's API root; the sandbox's URL in tests
	Enabled  *bool  `yaml:"enabled"`  // default true

	// Dispatch.
	BatchSize     int           `yaml:"batch_size"`      // default and maximum: the platform's limit
	RatePerSecond float64       `yaml:"rate_per_second"` // requests per second; 0 = unlimited
	Burst         int           `yaml:"burst"`
	MaxAttempts   int           `yaml:"max_attempts"` // then the row ends failed
	Timeout       time.Duration `yaml:"timeout"`      // per HTTP request
	ReplayShare   float64       `yaml:"replay_share"` // max share of a batch for replay rows

	// APIVersion is the platform API version (Spec.Versions); default the newest supported.
	APIVersion string `yaml:"api_version"`

	// Settings is the platform's own section (its package's Settings type).
	Settings Settings `yaml:"-"`
	rest     *yaml.Node
}

// IsEnabled reports whether the destination should upload (Enabled nil means true).
func (d DestinationConfig) IsEnabled() bool { return d.Enabled == nil || *d.Enabled }

// WithDefaults returns d with every unset common option filled in from spec. It never
// overrides a set value, so Validate still sees (and names) a bad one.
func (d DestinationConfig) WithDefaults(spec Spec) DestinationConfig {
	if d.Enabled == nil {
		t := true
		d.Enabled = &t
	}
	if d.BaseURL == "" {
		d.BaseURL = spec.DefaultBaseURL
	}
	if d.BatchSize == 0 {
		d.BatchSize = spec.MaxBatch
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
	if d.APIVersion == "" && len(spec.Versions) > 0 {
		d.APIVersion = spec.Versions[0].Name
	}
	if d.Settings == nil && spec.NewSettings != nil {
		d.Settings = spec.NewSettings()
	}
	if d.Settings != nil {
		d.Settings.Defaults()
	}
	return d
}

// Validate reports every problem in d, each prefixed with its YAML path under path (for
// example `destinations.google-main.customer_id: must be 10 digits, got "123-456"`), the
// platform's own checks included. now dates the API version check: a version past its
// sunset is refused.
func (d DestinationConfig) Validate(path string, spec Spec, now time.Time) []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: "+format, append([]any{path, field}, args...)...))
	}
	if u, err := url.Parse(d.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("base_url", "must be an absolute http(s) URL, got %q", d.BaseURL)
	}
	if d.BatchSize < 1 || d.BatchSize > spec.MaxBatch {
		bad("batch_size", "must be between 1 and %d for %s, got %d", spec.MaxBatch, d.Platform, d.BatchSize)
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
	if len(spec.Versions) == 0 && d.APIVersion != "" {
		bad("api_version", "%s has no API version to choose", spec.API)
	}
	if msg, refuse := spec.VersionWarning(d.APIVersion, now, 0); refuse {
		bad("api_version", "%s", msg)
	}
	if d.Settings != nil {
		errs = append(errs, d.Settings.Validate(path, d)...)
	}
	return errs
}

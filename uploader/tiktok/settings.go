package tiktok

import (
	"fmt"
	"regexp"

	"go.uber.org/zap"

	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
)

// Name is the platform name (a destination's `platform` key).
const Name = "tiktok"

// Spec is the TikTok Events API 2.0 (CRM events) as the registry lists it (platforms.md §3).
// Its path carries the fixed version v1.3: there is no version to choose.
func Spec() uploader.Spec {
	return uploader.Spec{
		Name:           Name,
		API:            "the TikTok Events API",
		MaxBatch:       MaxBatch,
		DefaultBaseURL: "https://business-api.tiktok.com",
		ConversionNoun: "event",
		Usable:         Usable,
		Sandbox:        Sandbox,
		Hashes:         hashes,
		NewSettings:    func() uploader.Settings { return &Settings{} },
		New: func(name string, d uploader.DestinationConfig, log *zap.Logger) (uploader.Platform, error) {
			return New(d, log), nil
		},
	}
}

// MaxBatch is the most events one request carries.
const MaxBatch = 1000

var hashes = map[pii.Field]string{pii.Email: pii.KeyEmail, pii.Phone: pii.KeyPhoneE164, pii.ExternalID: pii.KeyExternalID}

// Settings are a TikTok destination's own keys.
type Settings struct {
	EventSourceID   string `yaml:"event_source_id"`   // the CRM event set ID
	AccessToken     string `yaml:"access_token"`      // sent as Access-Token
	LeadEventSource string `yaml:"lead_event_source"` // the CRM's name; default: the row's source
	TestEventCode   string `yaml:"test_event_code"`   // Events Manager test mode
}

// Defaults: none.
func (s *Settings) Defaults() {}

var digitsOnly = regexp.MustCompile(`^[0-9]+$`)

// Validate checks the event set ID and that a token is set (never echoing it).
func (s *Settings) Validate(path string, _ uploader.DestinationConfig) []error {
	var errs []error
	if !digitsOnly.MatchString(s.EventSourceID) {
		errs = append(errs, fmt.Errorf("%s.event_source_id: must be the numeric CRM event set ID, got %q", path, s.EventSourceID))
	}
	if s.AccessToken == "" {
		errs = append(errs, fmt.Errorf("%s.access_token: required for tiktok", path))
	}
	return errs
}

// Usable reports whether id carries a ttclid or a hashed email, phone or external id: what
// TikTok matches on. Check refuses rows without one.
func Usable(id store.Identity) bool {
	ids := id.Identifiers
	if ids.Get(pii.KeyEmail) != "" || ids.Get(pii.KeyPhoneE164) != "" || ids.Get(pii.KeyExternalID) != "" {
		return true
	}
	for _, c := range id.Clicks {
		if c.Type == "ttclid" && c.ID != "" {
			return true
		}
	}
	return false
}

// WithPlaceholders returns a copy with the token replaced.
func (s *Settings) WithPlaceholders(secret, _ string) uploader.Settings {
	c := *s
	c.AccessToken = secret
	return &c
}

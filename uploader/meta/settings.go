package meta

import (
	"fmt"
	"regexp"
	"time"

	"go.uber.org/zap"

	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
)

// Name is the platform name (a destination's `platform` key).
const Name = "meta"

// Spec is the Meta Conversions API as the registry lists it (platforms.md §2,
// platforms-2026-12.md for the Graph API versions).
func Spec() uploader.Spec {
	return uploader.Spec{
		Name:           Name,
		API:            "the Meta Conversions API",
		MaxBatch:       MaxBatch,
		DefaultBaseURL: "https://graph.facebook.com",
		// Newest first. The CAPI event body is the same on all three; v27.0 (2026-11-04) is not
		// listed until it is tested here.
		Versions:       graphVersions,
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

var graphVersions = []uploader.Version{
	{Name: "v26.0"},
	{Name: "v25.0", Sunset: time.Date(2027, 2, 23, 0, 0, 0, 0, time.UTC)},
	{Name: "v24.0", Sunset: time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC)},
}

// MaxBatch is the most events one request carries.
const MaxBatch = 1000

var hashes = map[pii.Field]string{
	pii.Email: pii.KeyEmail, pii.Phone: pii.KeyPhoneDigits, pii.FirstName: pii.KeyFirstName,
	pii.LastName: pii.KeyLastName, pii.DateOfBirth: pii.KeyDateOfBirth, pii.Gender: pii.KeyGender,
	pii.City: pii.KeyCity, pii.State: pii.KeyState, pii.Zip: pii.KeyZip, pii.Country: pii.KeyCountry,
	pii.ExternalID: pii.KeyExternalID,
}

// Settings are a Meta destination's own keys.
type Settings struct {
	DatasetID       string `yaml:"dataset_id"`        // the dataset (pixel) ID
	AccessToken     string `yaml:"access_token"`      // a system-user token with the dataset's permission
	LeadEventSource string `yaml:"lead_event_source"` // the CRM's name for lead events; default: the row's source
	TestEventCode   string `yaml:"test_event_code"`   // Events Manager test mode
}

// Defaults: none; every key is either required or optional without a default.
func (s *Settings) Defaults() {}

var digitsOnly = regexp.MustCompile(`^[0-9]+$`)

// Validate checks the dataset ID and that a token is set (never echoing it).
func (s *Settings) Validate(path string, _ uploader.DestinationConfig) []error {
	var errs []error
	if !digitsOnly.MatchString(s.DatasetID) {
		errs = append(errs, fmt.Errorf("%s.dataset_id: must be the numeric dataset (pixel) ID, got %q", path, s.DatasetID))
	}
	if s.AccessToken == "" {
		errs = append(errs, fmt.Errorf("%s.access_token: required for meta", path))
	}
	return errs
}

// Usable reports whether id carries something Meta matches on: a Meta lead id, an fbc or
// fbp (or an fbclid with its click time, from which fbc is built), or a hashed email, phone
// or external id. Check refuses rows without one, so the join and the dispatcher agree.
func Usable(id store.Identity) bool {
	ids := id.Identifiers
	if leadID.MatchString(id.LeadID) || ids.Get(pii.KeyEmail) != "" || ids.Get(pii.KeyPhoneDigits) != "" || ids.Get(pii.KeyExternalID) != "" {
		return true
	}
	for _, c := range id.Clicks {
		switch {
		case (c.Type == "fbc" || c.Type == "fbp") && c.ID != "":
			return true
		case c.Type == "fbclid" && c.ID != "" && !c.At.IsZero():
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

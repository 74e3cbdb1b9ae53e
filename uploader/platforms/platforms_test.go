package platforms_test

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/uploader"
	"github.com/closedloop/closedloop/uploader/platforms"
)

func TestNew(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, platform string
		maxBatch       int
		poller         bool
		grouper        bool
	}{
		{"google-main", "google", 2000, true, true},
		{"google-ads", "google_ads", 2000, false, true},
		{"meta-main", "meta", 1000, false, false},
		{"tiktok", "tiktok", 1000, false, false},
		{"microsoft-crm", "microsoft", 1000, false, true}, // conversions and adjustments apart
		{"linkedin-crm", "linkedin", 5000, false, false},
	}
	for _, tc := range cases {
		p, err := platforms.New(tc.name, uploader.DestinationConfig{Platform: tc.platform}, zaptest.NewLogger(t))
		require.NoError(t, err, tc.name)
		require.Equal(t, tc.maxBatch, p.MaxBatch(), tc.name)
		_, poller := p.(uploader.StatusPoller)
		require.Equal(t, tc.poller, poller, tc.name)
		_, grouper := p.(uploader.Grouper)
		require.Equal(t, tc.grouper, grouper, tc.name)
	}
	p, err := platforms.New("tiktok", uploader.DestinationConfig{}, zaptest.NewLogger(t))
	require.NoError(t, err, "the name doubles as the platform when cfg.Platform is empty")
	require.Equal(t, 1000, p.MaxBatch())
	small, err := platforms.New("m", uploader.DestinationConfig{Platform: "meta", BatchSize: 50}, zaptest.NewLogger(t))
	require.NoError(t, err)
	require.Equal(t, 50, small.MaxBatch(), "batch_size caps MaxBatch")
	_, err = platforms.New("x", uploader.DestinationConfig{Platform: "myspace"}, zaptest.NewLogger(t))
	require.Error(t, err)
}

// TestRegistry checks what the rest of closedloop relies on: names unique, each Spec
// complete, its settings decodable and its versions newest first.
func TestRegistry(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, s := range platforms.All {
		require.NotEmpty(t, s.Name)
		require.False(t, seen[s.Name], "platform %s listed twice", s.Name)
		seen[s.Name] = true
		require.Positive(t, s.MaxBatch, s.Name)
		require.NotEmpty(t, s.API, s.Name)
		require.NotEmpty(t, s.DefaultBaseURL, s.Name)
		require.NotNil(t, s.Usable, s.Name)
		require.NotNil(t, s.New, s.Name)
		require.NotNil(t, s.NewSettings, s.Name)
		require.NotNil(t, s.Sandbox, s.Name)
		require.NotEmpty(t, s.Hashes, s.Name)
		for i := 1; i < len(s.Versions); i++ {
			if !s.Versions[i].Sunset.IsZero() && !s.Versions[i-1].Sunset.IsZero() {
				require.True(t, s.Versions[i].Sunset.Before(s.Versions[i-1].Sunset), "%s: versions newest first", s.Name)
			}
		}
		if len(s.Versions) > 0 {
			require.True(t, s.Versions[0].Sunset.IsZero() || s.Versions[0].Sunset.After(time.Now()), "%s: the default version is not sunset", s.Name)
		}
	}
	require.Equal(t, []string{"google", "google_ads", "linkedin", "meta", "microsoft", "tiktok"}, platforms.Names())
}

// TestHashes checks the identifier rules each platform chose (reference/platforms.md 1.7,
// 2.7, 3.7, 4.7, 5.7): which fields it takes hashed, and that a Set made from every field
// holds a hash under each chosen rule.
func TestHashes(t *testing.T) {
	t.Parallel()
	n := pii.Normalizer{DefaultRegion: "US"}
	set := pii.Set{}
	for f, v := range map[pii.Field]string{
		pii.Email: "a@b.co", pii.Phone: "6505551212", pii.FirstName: "Ann", pii.LastName: "Lee",
		pii.City: "Paris", pii.State: "IdF", pii.Zip: "75001", pii.Country: "FR",
		pii.DateOfBirth: "2000-01-02", pii.Gender: "f", pii.ExternalID: "u1",
	} {
		require.NoError(t, n.Add(set, f, v))
	}
	google := map[pii.Field]string{pii.Email: pii.KeyEmailCanonical, pii.Phone: pii.KeyPhoneE164,
		pii.FirstName: pii.KeyFirstNameNoTitle, pii.LastName: pii.KeyLastNameNoSuffix}
	want := map[string]map[pii.Field]string{
		"google":     google,
		"google_ads": google,
		"meta": {pii.Email: pii.KeyEmail, pii.Phone: pii.KeyPhoneDigits, pii.FirstName: pii.KeyFirstName,
			pii.LastName: pii.KeyLastName, pii.City: pii.KeyCity, pii.State: pii.KeyState, pii.Zip: pii.KeyZip,
			pii.Country: pii.KeyCountry, pii.DateOfBirth: pii.KeyDateOfBirth, pii.Gender: pii.KeyGender,
			pii.ExternalID: pii.KeyExternalID},
		"tiktok":    {pii.Email: pii.KeyEmail, pii.Phone: pii.KeyPhoneE164, pii.ExternalID: pii.KeyExternalID},
		"microsoft": {pii.Email: pii.KeyEmail, pii.Phone: pii.KeyPhoneE164},
		"linkedin":  {pii.Email: pii.KeyEmail},
	}
	for _, s := range platforms.All {
		require.Equal(t, want[s.Name], s.Hashes, s.Name)
		for f, rule := range s.Hashes {
			require.True(t, pii.IsSHA256Hex(set.Get(rule)), "%s %s: no hash under %s", s.Name, f, rule)
		}
		for f, rule := range s.Clear {
			_, hashed := s.Hashes[f]
			require.False(t, hashed, "%s %s: both hashed and clear", s.Name, f)
			_, err := n.Normalize(rule, "x")
			var pe *pii.Error
			if errors.As(err, &pe) {
				require.NotContains(t, pe.Reason, "unknown", "%s %s: %s is no rule", s.Name, f, rule)
			}
		}
	}
}

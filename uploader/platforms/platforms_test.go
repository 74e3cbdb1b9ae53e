package platforms_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

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

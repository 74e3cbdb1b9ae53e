package uploader_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/uploader"
)

func TestDestinationConfigDefaults(t *testing.T) {
	t.Parallel()
	d := uploader.DestinationConfig{Platform: uploader.PlatformGoogle}.WithDefaults()
	require.True(t, d.IsEnabled())
	require.Equal(t, "https://datamanager.googleapis.com", d.BaseURL)
	require.Equal(t, 2000, d.BatchSize)
	require.Equal(t, 90*24*time.Hour, d.ClickWindow)
	require.Equal(t, "https://oauth2.googleapis.com/token", d.TokenURL)
	m := uploader.DestinationConfig{Platform: uploader.PlatformMeta, BatchSize: 10}.WithDefaults()
	require.Equal(t, 10, m.BatchSize, "a set value is kept")
	require.Equal(t, "v25.0", m.APIVersion)
	require.Equal(t, 1000, uploader.DestinationConfig{Platform: uploader.PlatformTikTok}.WithDefaults().BatchSize)
	require.Equal(t, "v25", uploader.DestinationConfig{Platform: uploader.PlatformGoogleAds}.WithDefaults().APIVersion)
}

func TestDestinationConfigValidate(t *testing.T) {
	t.Parallel()
	google := func() uploader.DestinationConfig {
		return uploader.DestinationConfig{Platform: "google", CustomerID: "1234567890", ClientID: "id",
			ClientSecret: "super-secret", RefreshToken: "rt-secret"}
	}
	cases := []struct {
		name   string
		cfg    uploader.DestinationConfig
		errors []string
	}{
		{"valid google", google(), nil},
		{"valid meta", uploader.DestinationConfig{Platform: "meta", DatasetID: "555", AccessToken: "t"}, nil},
		{"valid tiktok", uploader.DestinationConfig{Platform: "tiktok", EventSourceID: "7312", AccessToken: "t"}, nil},
		{"hyphenated customer id", func() uploader.DestinationConfig { d := google(); d.CustomerID = "123-456"; return d }(),
			[]string{`destinations.google-main.customer_id: must be 10 digits, got "123-456"`}},
		{"google without credentials", uploader.DestinationConfig{Platform: "google_ads", CustomerID: "1234567890"},
			[]string{"destinations.google-main.client_id: required", "destinations.google-main.client_secret: required", "destinations.google-main.refresh_token: required"}},
		{"batch over the platform limit", uploader.DestinationConfig{Platform: "meta", DatasetID: "555", AccessToken: "t", BatchSize: 1001},
			[]string{"destinations.google-main.batch_size: must be between 1 and 1000 for meta, got 1001"}},
		{"click window over 90 days", func() uploader.DestinationConfig { d := google(); d.ClickWindow = 91 * 24 * time.Hour; return d }(),
			[]string{"destinations.google-main.click_window: must be between"}},
		{"unknown platform", uploader.DestinationConfig{Platform: "myspace"},
			[]string{`destinations.google-main.platform: must be google, google_ads, meta or tiktok, got "myspace"`,
				`destinations.google-main.base_url: must be an absolute http(s) URL, got ""`}},
		{"test mode per platform", func() uploader.DestinationConfig { d := google(); d.TestEventCode = "TEST1"; return d }(),
			[]string{"destinations.google-main.test_event_code: Google has no test event code"}},
		{"secret on the wrong platform is not echoed", uploader.DestinationConfig{Platform: "tiktok", EventSourceID: "7", AccessToken: "t", RefreshToken: "rt-secret"},
			[]string{"destinations.google-main.refresh_token: only used by Google platforms (value not shown)"}},
		{"meta dataset", uploader.DestinationConfig{Platform: "meta", DatasetID: "pixel-1", AccessToken: "t"},
			[]string{`destinations.google-main.dataset_id: must be the numeric dataset (pixel) ID, got "pixel-1"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			errs := tc.cfg.WithDefaults().Validate("destinations.google-main")
			require.Len(t, errs, len(tc.errors), "%v", errs)
			for i, want := range tc.errors {
				require.True(t, strings.HasPrefix(errs[i].Error(), want), "got %q, want prefix %q", errs[i], want)
				require.NotContains(t, errs[i].Error(), "super-secret")
				require.NotContains(t, errs[i].Error(), "rt-secret")
			}
		})
	}
}

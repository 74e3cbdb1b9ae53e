package uploader_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/closedloop/closedloop/uploader"
	"github.com/closedloop/closedloop/uploader/google"
	"github.com/closedloop/closedloop/uploader/meta"
	"github.com/closedloop/closedloop/uploader/platforms"
)

// decode reads one destination the way the config loader does: common keys, then the
// platform's own section through its Spec, then defaults.
func decode(t *testing.T, doc string) (uploader.DestinationConfig, uploader.Spec, []error) {
	t.Helper()
	var d uploader.DestinationConfig
	require.NoError(t, yaml.Unmarshal([]byte(doc), &d))
	spec, ok := platforms.Lookup(d.Platform)
	if !ok {
		return d, spec, []error{platforms.Unknown(d.Platform)}
	}
	errs := d.DecodeSettings("destinations.x", spec)
	return d.WithDefaults(spec), spec, errs
}

func TestDestinationConfigDefaults(t *testing.T) {
	t.Parallel()
	d, _, errs := decode(t, "platform: google")
	require.Empty(t, errs)
	require.True(t, d.IsEnabled())
	require.Equal(t, "https://datamanager.googleapis.com", d.BaseURL)
	require.Equal(t, 2000, d.BatchSize)
	g := d.Settings.(*google.Settings)
	require.Equal(t, 90*24*time.Hour, g.ClickWindow)
	require.Equal(t, "https://oauth2.googleapis.com/token", g.TokenURL)
	m, _, _ := decode(t, "{platform: meta, batch_size: 10, dataset_id: '555'}")
	require.Equal(t, 10, m.BatchSize, "a set value is kept")
	require.Equal(t, "v26.0", m.APIVersion, "the newest supported version")
	require.Equal(t, "555", m.Settings.(*meta.Settings).DatasetID)
	tk, _, _ := decode(t, "platform: tiktok")
	require.Equal(t, 1000, tk.BatchSize)
	ads, _, _ := decode(t, "platform: google_ads")
	require.Equal(t, "v25", ads.APIVersion)
}

func TestDestinationConfigValidate(t *testing.T) {
	t.Parallel()
	const google = "{platform: google, customer_id: '1234567890', client_id: id, client_secret: super-secret, refresh_token: rt-secret"
	now := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name   string
		doc    string
		errors []string
	}{
		{"valid google", google + "}", nil},
		{"valid meta", "{platform: meta, dataset_id: '555', access_token: t}", nil},
		{"valid tiktok", "{platform: tiktok, event_source_id: '7312', access_token: t}", nil},
		{"hyphenated customer id", "{platform: google, customer_id: '123-456', client_id: id, client_secret: super-secret, refresh_token: rt-secret}",
			[]string{`destinations.x.customer_id: must be 10 digits, got "123-456"`}},
		{"google without credentials", "{platform: google_ads, customer_id: '1234567890'}",
			[]string{"destinations.x.client_id: required", "destinations.x.client_secret: required", "destinations.x.refresh_token: required"}},
		{"batch over the platform limit", "{platform: meta, dataset_id: '555', access_token: t, batch_size: 1001}",
			[]string{"destinations.x.batch_size: must be between 1 and 1000 for meta, got 1001"}},
		{"click window over 90 days", google + ", click_window: 2184h}",
			[]string{"destinations.x.click_window: must be between"}},
		{"unknown platform", "{platform: myspace}", []string{`unknown platform "myspace" (want one of google, google_ads, linkedin, meta, microsoft, tiktok`}},
		{"a key of another platform", google + ", test_event_code: TEST1}",
			[]string{"destinations.x.test_event_code: unknown key for platform google (line 1)"}},
		{"secret on the wrong platform is not echoed", "{platform: tiktok, event_source_id: '7', access_token: t, refresh_token: rt-secret}",
			[]string{"destinations.x.refresh_token: unknown key for platform tiktok"}},
		{"meta dataset", "{platform: meta, dataset_id: pixel-1, access_token: t}",
			[]string{`destinations.x.dataset_id: must be the numeric dataset (pixel) ID, got "pixel-1"`}},
		{"a version past its sunset", "{platform: meta, dataset_id: '555', access_token: t, api_version: v24.0}",
			[]string{"destinations.x.api_version: v24.0 of the Meta Conversions API was sunset on 2026-11-10; set v26.0"}},
		{"a version this build does not know", google + ", api_version: v1}",
			[]string{"destinations.x.api_version: the Google Data Manager API has no API version to choose"}},
		{"an unknown ads version", "{platform: google_ads, customer_id: '1234567890', client_id: i, client_secret: s, refresh_token: r, api_version: v99}",
			[]string{"destinations.x.api_version: v99 is not a version this build supports for the Google Ads API (supported: v25, v24, v23, v22; default v25)"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, spec, errs := decode(t, tc.doc)
			if len(errs) == 0 {
				errs = d.Validate("destinations.x", spec, now)
			}
			require.Len(t, errs, len(tc.errors), "%v", errs)
			for i, want := range tc.errors {
				require.True(t, strings.HasPrefix(errs[i].Error(), want), "got %q, want prefix %q", errs[i], want)
				require.NotContains(t, errs[i].Error(), "super-secret")
				require.NotContains(t, errs[i].Error(), "rt-secret")
			}
		})
	}
}

func TestVersionWarningBeforeTheSunset(t *testing.T) {
	t.Parallel()
	spec := meta.Spec()
	msg, refuse := spec.VersionWarning("v25.0", time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC), 30*24*time.Hour)
	require.False(t, refuse)
	require.Equal(t, "v25.0 of the Meta Conversions API sunsets on 2027-02-23 (in 22 days); move to v26.0", msg)
	msg, refuse = spec.VersionWarning("v25.0", time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC), 30*24*time.Hour)
	require.Empty(t, msg, "82 days out: no warning yet")
	require.False(t, refuse)
}

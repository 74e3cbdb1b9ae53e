package platforms_test

import (
	"testing"

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
		{"google-main", uploader.PlatformGoogle, 2000, true, true},
		{"google-ads", uploader.PlatformGoogleAds, 2000, false, true},
		{"meta-main", uploader.PlatformMeta, 1000, false, false},
		{"tiktok", uploader.PlatformTikTok, 1000, false, false},
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

// Package platforms builds the uploader.Platform for a destination from its config: the
// one place that knows every platform package.
package platforms

import (
	"fmt"

	"go.uber.org/zap"

	"github.com/closedloop/closedloop/uploader"
	"github.com/closedloop/closedloop/uploader/google"
	"github.com/closedloop/closedloop/uploader/meta"
	"github.com/closedloop/closedloop/uploader/tiktok"
)

// Names lists the platform names New accepts.
var Names = []string{uploader.PlatformGoogle, uploader.PlatformGoogleAds, uploader.PlatformMeta, uploader.PlatformTikTok}

// New returns the platform for destination name configured by cfg (defaults applied here).
// The platform is chosen by cfg.Platform, or by name when cfg.Platform is empty; the logger
// is named "uploader.<platform>" with the destination as a field. The result may also
// implement uploader.StatusPoller (google) and uploader.Grouper (google, google_ads).
func New(name string, cfg uploader.DestinationConfig, log *zap.Logger) (uploader.Platform, error) {
	p := cfg.Platform
	if p == "" {
		p = name
		cfg.Platform = name
	}
	cfg = cfg.WithDefaults()
	l := log.Named("uploader." + p).With(zap.String("destination", name))
	switch p {
	case uploader.PlatformGoogle:
		return google.NewDataManager(cfg, nil, l), nil
	case uploader.PlatformGoogleAds:
		return google.NewAdsAPI(cfg, nil, l), nil
	case uploader.PlatformMeta:
		return meta.New(cfg, l), nil
	case uploader.PlatformTikTok:
		return tiktok.New(cfg, l), nil
	}
	return nil, fmt.Errorf("platforms: unknown platform %q for destination %q (want one of %v)", p, name, Names)
}

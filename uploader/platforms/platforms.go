// Package platforms is the registry: the one table of the platforms closedloop uploads to.
// Adding a platform is a new package under uploader/ exporting its uploader.Spec, and one
// line in All.
package platforms

import (
	"fmt"
	"sort"
	"strings"

	"go.uber.org/zap"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/uploader"
	"github.com/closedloop/closedloop/uploader/google"
	"github.com/closedloop/closedloop/uploader/linkedin"
	"github.com/closedloop/closedloop/uploader/meta"
	"github.com/closedloop/closedloop/uploader/microsoft"
	"github.com/closedloop/closedloop/uploader/sandbox"
	"github.com/closedloop/closedloop/uploader/tiktok"
)

// All lists every platform, in the order docs show them.
var All = []uploader.Spec{
	google.DataManagerSpec(),
	google.AdsSpec(),
	meta.Spec(),
	tiktok.Spec(),
	microsoft.Spec(),
	linkedin.Spec(),
}

// Lookup returns the platform named name.
func Lookup(name string) (uploader.Spec, bool) {
	for _, s := range All {
		if s.Name == name {
			return s, true
		}
	}
	return uploader.Spec{}, false
}

// Names lists the platform names, sorted.
func Names() []string {
	out := make([]string, len(All))
	for i, s := range All {
		out[i] = s.Name
	}
	sort.Strings(out)
	return out
}

// Unknown is the error for a platform name that is not registered.
func Unknown(name string) error {
	return fmt.Errorf("unknown platform %q (want one of %s)", name, strings.Join(Names(), ", "))
}

// Target describes platform name for the stage mappings.
func Target(name string) crm.Target {
	s, ok := Lookup(name)
	if !ok {
		return crm.Target{Platform: name}
	}
	return crm.Target{Platform: s.Name, Noun: s.ConversionNoun, Check: s.CheckConversion, Retracts: s.Retracts, Restates: s.Restates, ResolvesNames: s.ResolvesNames, API: s.API}
}

// Targets describes each destination (name → platform) for the stage mappings.
func Targets(destinations map[string]string) map[string]crm.Target {
	out := make(map[string]crm.Target, len(destinations))
	for d, p := range destinations {
		out[d] = Target(p)
	}
	return out
}

// New returns the platform for destination name configured by cfg (defaults applied here).
// The platform is chosen by cfg.Platform, or by name when cfg.Platform is empty; the logger
// is named "uploader.<platform>" with the destination as a field.
func New(name string, cfg uploader.DestinationConfig, log *zap.Logger) (uploader.Platform, error) {
	if cfg.Platform == "" {
		cfg.Platform = name
	}
	spec, ok := Lookup(cfg.Platform)
	if !ok {
		return nil, fmt.Errorf("platforms: destination %q: %w", name, Unknown(cfg.Platform))
	}
	l := log.Named("uploader." + spec.Name).With(zap.String("destination", name))
	return spec.New(name, cfg.WithDefaults(spec), l)
}

// NewSandbox returns a sandbox server emulating every registered platform (each Spec's
// Sandbox, asked in registry order). log may be zap.NewNop().
func NewSandbox(opts sandbox.Options, log *zap.Logger) *sandbox.Server {
	mounts := make([]sandbox.Mount, 0, len(All))
	for _, s := range All {
		mounts = append(mounts, s.Sandbox)
	}
	return sandbox.New(opts, log, mounts...)
}

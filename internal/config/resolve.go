package config

import (
	"context"
	"fmt"
	"sync"

	"go.uber.org/zap"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/uploader"
	"github.com/closedloop/closedloop/uploader/platforms"
)

// ResolvingTargets is Targets with a Resolve on every destination whose platform looks
// conversions up by name: each call asks the platform (one lookup, bounded by the
// destination's timeout and ctx). A Mapping compiled against these holds the resolved ids,
// so names are looked up once per compile (at start and on each reload), never per row.
func (c *Config) ResolvingTargets(ctx context.Context, log *zap.Logger) map[string]crm.Target {
	out := c.Targets()
	for name, t := range out {
		if !t.ResolvesNames {
			continue
		}
		d := c.Destinations[name]
		var (
			once     sync.Once
			resolver uploader.NameResolver
			err      error
		)
		t.Resolve = func(conversion string) (string, error) {
			once.Do(func() {
				var p uploader.Platform
				if p, err = platforms.New(name, d, log); err != nil {
					return
				}
				var ok bool
				if resolver, ok = p.(uploader.NameResolver); !ok {
					err = fmt.Errorf("platform %s cannot look up conversions by name", d.Platform)
				}
			})
			if err != nil {
				return "", err
			}
			ctx, cancel := context.WithTimeout(ctx, d.Timeout)
			defer cancel()
			return resolver.ResolveConversion(ctx, conversion)
		}
		out[name] = t
	}
	return out
}

// CompileMappingsResolving compiles the mappings with conversion names resolved on their
// platforms (see ResolvingTargets).
func (c *Config) CompileMappingsResolving(ctx context.Context, log *zap.Logger) (*crm.Mapping, error) {
	return crm.CompileMappings(c.Mappings, c.ResolvingTargets(ctx, log))
}

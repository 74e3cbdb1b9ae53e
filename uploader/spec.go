package uploader

import (
	"fmt"
	"reflect"
	"strings"
	"time"

	"go.uber.org/zap"
	"gopkg.in/yaml.v3"

	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader/sandbox"
)

// Spec is everything the rest of closedloop knows about one platform. Each platform package
// exports its Spec and owns every fact in it; uploader/platforms lists them (the registry),
// and nothing outside those packages and the registry names a platform.
type Spec struct {
	// Name is the value of a destination's `platform` key.
	Name string
	// API names the API in messages ("the Meta Conversions API").
	API string
	// MaxBatch is the most rows one request may carry.
	MaxBatch int
	// DefaultBaseURL is the production API root.
	DefaultBaseURL string
	// Versions are the API versions the package supports and is tested on, newest first;
	// Versions[0] is the default. Empty when the API has no version to choose.
	Versions []Version
	// Retracts says the platform can take back a conversion it accepted.
	Retracts bool
	// Restates says the platform can change the value of a conversion it accepted (a
	// restatement row, store.KindRestatement); without it restatement rows are skipped,
	// restatement_unsupported.
	Restates bool
	// ConversionNoun is what the platform calls a conversion name ("conversion action").
	ConversionNoun string
	// CheckConversion validates a mapping's conversion name for this platform; nil accepts
	// any name without surrounding spaces or control characters.
	CheckConversion func(name string) error
	// ResolvesNames says a mapping may name a conversion by its name (`conversion: {name}`):
	// the platform implements NameResolver.
	ResolvesNames bool
	// Usable is the one decision whether a joined identity carries an identifier this
	// platform can match on: it lets a conversion leave awaiting_identity (the join) and
	// the platform's Check refuses rows without one (the dispatcher).
	Usable func(id store.Identity) bool
	// Sandbox mounts the platform's emulation on the sandbox server (uploader/sandbox): its
	// endpoints, schema checks, error shapes and dedup; uploader/platforms.NewSandbox mounts
	// every registered platform's.
	Sandbox sandbox.Mount
	// Hashes chooses the normalization rule (a pii.Key* constant, also the pii.Set key the
	// platform reads) for each identifier field it takes hashed.
	Hashes map[pii.Field]string
	// Clear names the rule that forms each identifier field the platform takes unhashed. A
	// pii.Set holds no clear value but the country code, so closedloop sends none of these
	// from stored identities; `identities hash` shows their form.
	Clear map[pii.Field]string
	// NewSettings returns the zero value of the platform's own YAML section (a pointer to a
	// struct with yaml tags); its keys sit beside the common destination keys.
	NewSettings func() Settings
	// New builds the platform for destination name. d has had its defaults applied and
	// d.Settings is the platform's own.
	New func(name string, d DestinationConfig, log *zap.Logger) (Platform, error)
}

// Version is one API version and the day it stops working (zero: none announced).
type Version struct {
	Name   string
	Sunset time.Time
}

// Settings is a platform's own section of a destination's config.
type Settings interface {
	// Defaults fills every unset option; it never overrides a set one.
	Defaults()
	// Validate reports every problem, each prefixed with path and the key
	// (`destinations.meta-crm.dataset_id: ...`); secrets are never echoed. d holds the
	// destination's common keys.
	Validate(path string, d DestinationConfig) []error
}

// Placeholding is implemented by Settings that hold credentials: WithPlaceholders returns a
// copy whose secrets are secret and whose OAuth token endpoint (if any) is tokenURL, so
// `mappings explain` can build the exact request without real credentials.
type Placeholding interface {
	WithPlaceholders(secret, tokenURL string) Settings
}

// Version returns the spec's entry for name.
func (s Spec) Version(name string) (Version, bool) {
	for _, v := range s.Versions {
		if v.Name == name {
			return v, true
		}
	}
	return Version{}, false
}

// VersionWarning says what is wrong with version name at now: "" when it is supported and
// not within warnFor of its sunset; a warning when it sunsets within warnFor; refuse is set
// when it is unknown or already past its sunset.
func (s Spec) VersionWarning(name string, now time.Time, warnFor time.Duration) (msg string, refuse bool) {
	if len(s.Versions) == 0 {
		return "", false
	}
	v, ok := s.Version(name)
	if !ok {
		names := make([]string, len(s.Versions))
		for i, v := range s.Versions {
			names[i] = v.Name
		}
		return fmt.Sprintf("%s is not a version this build supports for %s (supported: %s; default %s)",
			name, s.API, strings.Join(names, ", "), s.Versions[0].Name), true
	}
	switch {
	case v.Sunset.IsZero():
		return "", false
	case !now.Before(v.Sunset):
		return fmt.Sprintf("%s of %s was sunset on %s; set %s", v.Name, s.API, v.Sunset.Format("2006-01-02"), s.Versions[0].Name), true
	case v.Sunset.Sub(now) <= warnFor:
		return fmt.Sprintf("%s of %s sunsets on %s (in %d days); move to %s", v.Name, s.API, v.Sunset.Format("2006-01-02"),
			int(v.Sunset.Sub(now).Hours()/24), s.Versions[0].Name), false
	}
	return "", false
}

// DecodeSettings decodes the platform keys of d (those that are not common destination
// keys) into a new spec.NewSettings() and applies its defaults. Keys the platform does not
// have are errors naming their path under path and their line.
func (d *DestinationConfig) DecodeSettings(path string, spec Spec) []error {
	s := spec.NewSettings()
	var errs []error
	if d.rest != nil {
		known := yamlKeys(s)
		for i := 0; i+1 < len(d.rest.Content); i += 2 {
			k := d.rest.Content[i]
			if !known[k.Value] {
				errs = append(errs, fmt.Errorf("%s.%s: unknown key for platform %s (line %d)", path, k.Value, spec.Name, k.Line))
			}
		}
		if len(errs) == 0 {
			if err := d.rest.Decode(s); err != nil {
				errs = append(errs, fmt.Errorf("%s: %s", path, strings.TrimPrefix(err.Error(), "yaml: ")))
			}
		}
	}
	s.Defaults()
	d.Settings = s
	return errs
}

// UnmarshalYAML decodes the common destination keys and keeps the others for the
// platform's DecodeSettings.
func (d *DestinationConfig) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: a destination must be a mapping", n.Line)
	}
	common := yamlKeys(&commonKeys{})
	own := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: n.Line, Column: n.Column}
	rest := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: n.Line, Column: n.Column}
	for i := 0; i+1 < len(n.Content); i += 2 {
		into := rest
		if common[n.Content[i].Value] {
			into = own
		}
		into.Content = append(into.Content, n.Content[i], n.Content[i+1])
	}
	var c commonKeys
	if err := own.Decode(&c); err != nil {
		return err
	}
	keepSettings := d.Settings
	*d = DestinationConfig(c)
	d.Settings = keepSettings
	if len(rest.Content) > 0 {
		d.rest = rest
	}
	return nil
}

// commonKeys is DestinationConfig without its methods, for decoding.
type commonKeys DestinationConfig

// yamlKeys lists the yaml keys of the struct v points to.
func yamlKeys(v any) map[string]bool {
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	keys := map[string]bool{}
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name != "" && name != "-" {
			keys[name] = true
		}
	}
	return keys
}

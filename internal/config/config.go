// Package config loads closedloop's one YAML file: defaults, then the file (unknown keys are
// errors), then ${ENV_VAR} references for secrets. Validate reports every problem at once,
// each naming its YAML path. Component config structs live beside their code (store.Config,
// consumer.Config, uploader.DestinationConfig, crm.MappingRule); this package composes them.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/closedloop/closedloop/consumer"
	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/enrich"
	"github.com/closedloop/closedloop/internal/ingest"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
	"github.com/closedloop/closedloop/uploader/platforms"
)

// Config is the whole configuration of one closedloop process.
type Config struct {
	Log          LogConfig                             `yaml:"log"`
	Admin        AdminConfig                           `yaml:"admin"`
	PII          PIIConfig                             `yaml:"pii"`
	Kafka        consumer.Config                       `yaml:"kafka"`
	Store        store.Config                          `yaml:"store"`
	Uploader     UploaderConfig                        `yaml:"uploader"`
	Destinations map[string]uploader.DestinationConfig `yaml:"destinations"`
	Mappings     []crm.MappingRule                     `yaml:"mappings"`
	Report       ReportConfig                          `yaml:"report"`
	// CRMs are the CRM API connections that enrich thin stage changes (internal/enrich).
	CRMs enrich.Config `yaml:"crms"`
	// Ingest is the webhook front (internal/ingest).
	Ingest ingest.Config `yaml:"ingest"`

	// Path is the file the config was loaded from ("" for built-in defaults).
	Path string `yaml:"-"`
	// sections are the top-level keys the file set.
	sections map[string]bool
}

// Has reports whether the file set the top-level section name (for example "store"), as
// opposed to leaving it to the defaults.
func (c *Config) Has(section string) bool { return c.sections[section] }

// LogConfig says how the worker logs.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // json | console
}

// AdminConfig is the admin HTTP server (/healthz, /readyz, /metrics, status page).
type AdminConfig struct {
	Listen          string        `yaml:"listen"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// Pprof serves Go's runtime profiles at /debug/pprof/ (CPU, heap, goroutines, and
	// block and mutex contention sampled while it is on): for diagnosing a slow worker.
	Pprof bool `yaml:"pprof"`
}

// PIIConfig holds normalization settings.
type PIIConfig struct {
	DefaultRegion string `yaml:"default_region"` // ISO 3166-1 alpha-2 for phones without a country code
}

// UploaderConfig holds settings shared by every destination's dispatcher.
type UploaderConfig struct {
	Enabled      *bool         `yaml:"enabled"`
	PollInterval time.Duration `yaml:"poll_interval"`
	LeaseFor     time.Duration `yaml:"lease_for"`
	// StatusPollInterval and StatusPollLimit pace the platforms that accept asynchronously
	// (Google Data Manager): every interval, up to limit rows in state sent are checked
	// with the platform. Together they cap how fast rows reach accepted or rejected.
	StatusPollInterval time.Duration `yaml:"status_poll_interval"`
	StatusPollLimit    int           `yaml:"status_poll_limit"`
	// AdjustmentWait is how long a retraction or restatement waits before it is looked at
	// again while the conversion it adjusts (or an earlier adjustment of it) is not through.
	AdjustmentWait time.Duration `yaml:"adjustment_wait"`
}

// ReportConfig tunes the reconciliation report's flags.
type ReportConfig struct {
	RateChangeThreshold float64 `yaml:"rate_change_threshold"` // flag a rate that moved more than this (0.10 = 10 points)
	SparseWeeklyVolume  int     `yaml:"sparse_weekly_volume"`  // flag conversions under this many a week
}

// Default returns the configuration every file starts from.
func Default() Config {
	enabled := true
	return Config{
		Log:   LogConfig{Level: "info", Format: "json"},
		Admin: AdminConfig{Listen: "127.0.0.1:9464", ShutdownTimeout: 15 * time.Second},
		PII:   PIIConfig{DefaultRegion: "US"},
		Kafka: consumer.DefaultConfig(),
		Store: store.DefaultConfig(),
		Uploader: UploaderConfig{Enabled: &enabled, PollInterval: time.Second, LeaseFor: 2 * time.Minute,
			StatusPollInterval: 30 * time.Second, StatusPollLimit: 1000, AdjustmentWait: time.Minute},
		Report: ReportConfig{RateChangeThreshold: 0.10, SparseWeeklyVolume: 50},
		CRMs:   enrich.DefaultConfig(),
		Ingest: ingest.DefaultConfig(),
	}
}

// LookupEnv resolves ${NAME} references; os.LookupEnv in main, a map in tests.
type LookupEnv func(name string) (string, bool)

// Load reads the file at path, applies it over Default, resolves ${ENV} references and
// validates the result. The error lists every problem found.
func Load(path string, env LookupEnv) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := Parse(raw, env)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	cfg.Path = path
	return cfg, nil
}

// Parse is Load for bytes already read.
func Parse(raw []byte, env LookupEnv) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	var envErrs []error
	expandEnv(&doc, "", env, &envErrs)
	if len(envErrs) > 0 {
		return nil, errors.Join(envErrs...)
	}
	expanded, err := yaml.Marshal(&doc)
	if err != nil {
		return nil, err
	}
	cfg := Default()
	dec := yaml.NewDecoder(bytes.NewReader(expanded))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		var again yaml.Node // line numbers of the expanded text the decoder saw
		_ = yaml.Unmarshal(expanded, &again)
		return nil, namedDecodeError(err, &again, &doc)
	}
	cfg.sections = topLevelKeys(&doc)
	if errs := cfg.applyDefaults(); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

var unknownField = regexp.MustCompile(`^line (\d+): field (\S+) not found in type \S+$`)

// namedDecodeError rewrites yaml.v3's decode errors so that each names the YAML path:
// `kafka.batch_wiat: unknown key` rather than a line of the expanded text and a Go type.
func namedDecodeError(err error, doc, original *yaml.Node) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	paths := map[int][]string{}
	keyPaths(doc, "", paths)
	lineOf := map[string]int{} // in the file as written
	origPaths := map[int][]string{}
	keyPaths(original, "", origPaths)
	for line, ps := range origPaths {
		for _, p := range ps {
			lineOf[p] = line
		}
	}
	errs := make([]error, 0, len(te.Errors))
	for _, e := range te.Errors {
		if m := unknownField.FindStringSubmatch(e); m != nil {
			line, _ := strconv.Atoi(m[1])
			where := m[2]
			for _, p := range paths[line] {
				if p == m[2] || strings.HasSuffix(p, "."+m[2]) {
					where = p
					break
				}
			}
			if l, ok := lineOf[where]; ok {
				errs = append(errs, fmt.Errorf("%s: unknown key (line %d)", where, l))
			} else {
				errs = append(errs, fmt.Errorf("%s: unknown key", where))
			}
			continue
		}
		errs = append(errs, errors.New(e))
	}
	return errors.Join(errs...)
}

func topLevelKeys(doc *yaml.Node) map[string]bool {
	keys := map[string]bool{}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 && doc.Content[0].Kind == yaml.MappingNode {
		m := doc.Content[0]
		for i := 0; i+1 < len(m.Content); i += 2 {
			keys[m.Content[i].Value] = true
		}
	}
	return keys
}

// keyPaths records the YAML path of every mapping key by its line.
func keyPaths(n *yaml.Node, path string, out map[int][]string) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			keyPaths(c, path, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := join(path, n.Content[i].Value)
			out[n.Content[i].Line] = append(out[n.Content[i].Line], p)
			keyPaths(n.Content[i+1], p, out)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			keyPaths(c, fmt.Sprintf("%s[%d]", path, i), out)
		}
	}
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// expandEnv replaces ${NAME} in every scalar value, recording a path-named error for each
// reference that is not set. Keys are never expanded.
func expandEnv(n *yaml.Node, path string, env LookupEnv, errs *[]error) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			expandEnv(c, path, env, errs)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			expandEnv(n.Content[i+1], join(path, n.Content[i].Value), env, errs)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			expandEnv(c, fmt.Sprintf("%s[%d]", path, i), env, errs)
		}
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, "${") {
			return
		}
		n.Value = envRef.ReplaceAllStringFunc(n.Value, func(ref string) string {
			name := envRef.FindStringSubmatch(ref)[1]
			v, ok := env(name)
			if !ok {
				*errs = append(*errs, fmt.Errorf("%s: environment variable %s is not set", path, name))
			}
			return v
		})
		n.Tag = "" // let the decoder infer the type of the expanded value
		n.Style = 0
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// applyDefaults decodes each destination's platform keys with its platform's Spec and fills
// the defaults. An unknown platform is left for Validate to name.
func (c *Config) applyDefaults() []error {
	var errs []error
	for _, name := range c.DestinationNames() {
		d := c.Destinations[name]
		if d.Platform == "" {
			d.Platform = name
		}
		spec, ok := platforms.Lookup(d.Platform)
		if !ok {
			c.Destinations[name] = d
			continue
		}
		errs = append(errs, d.DecodeSettings("destinations."+name, spec)...)
		c.Destinations[name] = d.WithDefaults(spec)
	}
	c.CRMs = c.CRMs.WithDefaults()
	firstStage := ""
	if len(c.Kafka.StageTopics) > 0 {
		firstStage = c.Kafka.StageTopics[0].Topic
	}
	c.Ingest = c.Ingest.WithDefaults(firstStage)
	return errs
}

// SunsetWarnFor is how long before an API version's sunset config check and run warn.
const SunsetWarnFor = 30 * 24 * time.Hour

// Warnings lists what is allowed but needs attention soon: an API version that sunsets
// within SunsetWarnFor. (One already past its sunset fails Validate.)
func (c *Config) Warnings(now time.Time) []string {
	var out []string
	for _, name := range c.DestinationNames() {
		d := c.Destinations[name]
		spec, ok := platforms.Lookup(d.Platform)
		if !ok {
			continue
		}
		if msg, refuse := spec.VersionWarning(d.APIVersion, now, SunsetWarnFor); msg != "" && !refuse {
			out = append(out, "destinations."+name+".api_version: "+msg)
		}
	}
	return out
}

// Validate reports every problem at once, each prefixed with its YAML path.
func (c *Config) Validate() error {
	var errs []error
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level: must be debug, info, warn or error, got %q", c.Log.Level))
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		errs = append(errs, fmt.Errorf("log.format: must be json or console, got %q", c.Log.Format))
	}
	if c.Admin.Listen == "" {
		errs = append(errs, errors.New("admin.listen: required (host:port)"))
	}
	if len(c.PII.DefaultRegion) != 2 || strings.ToUpper(c.PII.DefaultRegion) != c.PII.DefaultRegion {
		errs = append(errs, fmt.Errorf("pii.default_region: must be a 2-letter upper-case ISO 3166-1 code, got %q", c.PII.DefaultRegion))
	}
	if c.Uploader.AdjustmentWait <= 0 {
		errs = append(errs, errors.New("uploader.adjustment_wait: must be positive"))
	}
	if c.Uploader.PollInterval <= 0 {
		errs = append(errs, errors.New("uploader.poll_interval: must be positive"))
	}
	if c.Uploader.LeaseFor < time.Second {
		errs = append(errs, errors.New("uploader.lease_for: must be at least 1s"))
	}
	if c.Uploader.StatusPollInterval < time.Second {
		errs = append(errs, fmt.Errorf("uploader.status_poll_interval: must be at least 1s, got %s", c.Uploader.StatusPollInterval))
	}
	if c.Uploader.StatusPollLimit < 1 || c.Uploader.StatusPollLimit > 100000 {
		errs = append(errs, fmt.Errorf("uploader.status_poll_limit: must be between 1 and 100000 rows, got %d", c.Uploader.StatusPollLimit))
	}
	if c.Report.RateChangeThreshold <= 0 || c.Report.RateChangeThreshold >= 1 {
		errs = append(errs, fmt.Errorf("report.rate_change_threshold: must be between 0 and 1, got %v", c.Report.RateChangeThreshold))
	}
	errs = append(errs, c.Kafka.Validate("kafka")...)
	errs = append(errs, c.Store.Validate()...)
	errs = append(errs, c.CRMs.Validate("crms")...)
	errs = append(errs, c.Ingest.Validate("ingest")...)
	for _, name := range c.DestinationNames() {
		d := c.Destinations[name]
		spec, ok := platforms.Lookup(d.Platform)
		if !ok {
			errs = append(errs, fmt.Errorf("destinations.%s.platform: %w", name, platforms.Unknown(d.Platform)))
			continue
		}
		errs = append(errs, d.Validate("destinations."+name, spec, time.Now())...)
	}
	if _, err := c.CompileMappings(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// DestinationNames returns the configured destination names, sorted.
func (c *Config) DestinationNames() []string {
	names := make([]string, 0, len(c.Destinations))
	for n := range c.Destinations {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// CompileMappings validates the mapping rules against the destinations and compiles them.
func (c *Config) CompileMappings() (*crm.Mapping, error) {
	return crm.CompileMappings(c.Mappings, c.Targets())
}

// Targets describes each destination's platform for the stage mappings (from the platform
// registry); a destination of an unknown platform is described by its name alone.
func (c *Config) Targets() map[string]crm.Target {
	out := make(map[string]crm.Target, len(c.Destinations))
	for name, d := range c.Destinations {
		out[name] = platforms.Target(d.Platform)
	}
	return out
}

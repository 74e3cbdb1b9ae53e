package ingest

import (
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// CRM kinds a source can be (SourceConfig.CRM).
const (
	CRMHubSpot    = "hubspot"
	CRMSalesforce = "salesforce"
	CRMPipedrive  = "pipedrive"
	CRMClose      = "close"
	CRMAttio      = "attio"
	CRMCanonical  = "canonical"
)

// CRMs lists every kind, in the order the docs show them.
var CRMs = []string{CRMHubSpot, CRMSalesforce, CRMPipedrive, CRMClose, CRMAttio, CRMCanonical}

// Defaults.
const (
	// DefaultListen is where `closedloop ingest` listens when ingest.listen is empty:
	// loopback; put a TLS-terminating load balancer (or tls_cert/tls_key) in front.
	DefaultListen         = "127.0.0.1:8088"
	DefaultMaxBody        = ByteSize(1 << 20)
	DefaultMaxAge         = 5 * time.Minute
	DefaultMaxConcurrent  = 256
	DefaultPublishTimeout = 10 * time.Second
	DefaultReadTimeout    = 15 * time.Second
	DefaultIdleTimeout    = 60 * time.Second
)

// Config is the `ingest` section of the config file. Start from DefaultConfig, decode
// the YAML over it, call WithDefaults, then Validate.
type Config struct {
	// Listen is the host:port of the webhook server. Empty: `closedloop run` serves no
	// webhooks (and `closedloop ingest` listens on DefaultListen).
	Listen string `yaml:"listen"`
	// TLSCert and TLSKey are PEM files; with both set the server speaks TLS only.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// MaxBody is the largest request body accepted ("1MiB"); larger ones get 413.
	MaxBody ByteSize `yaml:"max_body"`
	// ReadTimeout bounds reading one request, headers and body; WriteTimeout the whole
	// exchange (default: PublishTimeout + 5s); IdleTimeout a kept-alive connection.
	ReadTimeout  time.Duration `yaml:"read_timeout"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
	IdleTimeout  time.Duration `yaml:"idle_timeout"`
	// PublishTimeout is how long one request waits for Kafka to acknowledge all of its
	// messages before it is answered 503 (the CRM retries).
	PublishTimeout time.Duration `yaml:"publish_timeout"`
	// Sources are the webhook endpoints, one per CRM account or app.
	Sources []SourceConfig `yaml:"sources"`
}

// SourceConfig is one webhook endpoint. Secrets come from ${ENV} references.
type SourceConfig struct {
	// Name names the source in metrics, logs and the closedloop-source header, and makes
	// the default path /webhooks/<name>.
	Name string `yaml:"name"`
	// CRM is the kind: hubspot | salesforce | pipedrive | close | attio | canonical.
	CRM string `yaml:"crm"`
	// Path overrides the URL path the source is served at.
	Path string `yaml:"path"`
	// Secret is the signing key: HubSpot's app client secret, Close's signature_key (hex),
	// Attio's webhook secret, the canonical HMAC key, Pipedrive's HTTP Basic password.
	Secret string `yaml:"secret"`
	// Username is Pipedrive's HTTP Basic user name (set on the webhook with the password).
	Username string `yaml:"username"`
	// OrganizationIDs are the Salesforce orgs whose outbound messages are accepted
	// (18-character ids; a 15-character one matches its 18-character form).
	OrganizationIDs []string `yaml:"organization_ids"`
	// PublicURL is the URL the CRM calls, as the CRM sees it (scheme, host, path): HubSpot
	// signs it (v2, v3). Required for hubspot.
	PublicURL string `yaml:"public_url"`
	// SignatureVersions are the HubSpot signatures accepted (default v3, v2, v1). v1 and v2
	// carry no timestamp, so a captured request could be replayed; list only v3 to refuse
	// them.
	SignatureVersions []string `yaml:"signature_versions"`
	// MaxAge refuses requests of timestamped schemes (HubSpot v3, Close, canonical) older
	// than this (default 5m), or dated further than it in the future.
	MaxAge time.Duration `yaml:"max_age"`
	// Topic is the Kafka topic (default: the first of kafka.stage_topics).
	Topic string `yaml:"topic"`
	// MaxConcurrent caps the requests of this source handled at once; more get 503 with
	// Retry-After (default 256).
	MaxConcurrent int `yaml:"max_concurrent"`
}

// DefaultConfig returns the configuration a file starts from: no listener, no sources.
func DefaultConfig() Config {
	return Config{
		MaxBody:        DefaultMaxBody,
		ReadTimeout:    DefaultReadTimeout,
		IdleTimeout:    DefaultIdleTimeout,
		PublishTimeout: DefaultPublishTimeout,
	}
}

// WithDefaults fills zero values, per source too; defaultTopic is the first stage topic.
func (c Config) WithDefaults(defaultTopic string) Config {
	d := DefaultConfig()
	if c.MaxBody == 0 {
		c.MaxBody = d.MaxBody
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = d.ReadTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = d.PublishTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = c.PublishTimeout + 5*time.Second
	}
	sources := make([]SourceConfig, len(c.Sources))
	for i, s := range c.Sources {
		s.CRM = strings.ToLower(strings.TrimSpace(s.CRM))
		if s.Path == "" && s.Name != "" {
			s.Path = "/webhooks/" + s.Name
		}
		if s.MaxAge == 0 {
			s.MaxAge = DefaultMaxAge
		}
		if s.Topic == "" {
			s.Topic = defaultTopic
		}
		if s.MaxConcurrent == 0 {
			s.MaxConcurrent = DefaultMaxConcurrent
		}
		if s.CRM == CRMHubSpot && len(s.SignatureVersions) == 0 {
			s.SignatureVersions = []string{"v3", "v2", "v1"}
		}
		sources[i] = s
	}
	c.Sources = sources
	return c
}

var sourceName = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// Validate reports every problem in c, each prefixed with its YAML path under path
// ("ingest.sources[0].secret: required for hubspot"). It never echoes a secret.
func (c Config) Validate(path string) []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: "+format, append([]any{path, field}, args...)...))
	}
	if c.Listen != "" {
		if host, port, ok := strings.Cut(c.Listen, ":"); !ok || port == "" || strings.ContainsAny(host+port, " /") {
			add("listen", "must be host:port, got %q", c.Listen)
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		add("tls_cert", "tls_cert and tls_key go together")
	}
	if c.MaxBody < 1024 || c.MaxBody > 64<<20 {
		add("max_body", "must be between 1KiB and 64MiB, got %d bytes", c.MaxBody)
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{{"read_timeout", c.ReadTimeout}, {"write_timeout", c.WriteTimeout}, {"idle_timeout", c.IdleTimeout}, {"publish_timeout", c.PublishTimeout}} {
		if d.v < 0 || (d.v > 0 && d.v < 100*time.Millisecond) || d.v > 10*time.Minute {
			add(d.field, "must be between 100ms and 10m, got %s", d.v)
		}
	}
	if c.WriteTimeout > 0 && c.WriteTimeout <= c.PublishTimeout {
		add("write_timeout", "must exceed publish_timeout (%s), got %s", c.PublishTimeout, c.WriteTimeout)
	}
	names, paths := map[string]int{}, map[string]int{}
	for i, s := range c.Sources {
		p := fmt.Sprintf("sources[%d]", i)
		switch j, dup := names[s.Name]; {
		case !sourceName.MatchString(s.Name):
			add(p+".name", "must be 1-63 of [a-z0-9_.-], starting with a letter or digit, got %q", s.Name)
		case dup:
			add(p+".name", "%q is already the name of sources[%d]", s.Name, j)
		default:
			names[s.Name] = i
		}
		if j, dup := paths[s.Path]; dup {
			add(p+".path", "%q is already the path of sources[%d]", s.Path, j)
		} else if s.Path != "" {
			paths[s.Path] = i
			if !strings.HasPrefix(s.Path, "/") || strings.ContainsAny(s.Path, " ?#{}") {
				add(p+".path", "must start with / and hold no space, ?, #, { or }, got %q", s.Path)
			}
		}
		if s.Topic == "" {
			add(p+".topic", "required (no kafka.stage_topics to default to)")
		}
		if s.MaxAge < time.Second || s.MaxAge > 24*time.Hour {
			add(p+".max_age", "must be between 1s and 24h, got %s", s.MaxAge)
		}
		if s.MaxConcurrent < 1 || s.MaxConcurrent > 100000 {
			add(p+".max_concurrent", "must be between 1 and 100000, got %d", s.MaxConcurrent)
		}
		needSecret := true
		switch s.CRM {
		case CRMHubSpot:
			if u, err := url.Parse(s.PublicURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" {
				add(p+".public_url", "required for hubspot: the absolute http(s) URL HubSpot calls, without a query, got %q", s.PublicURL)
			}
			for j, v := range s.SignatureVersions {
				if v != "v1" && v != "v2" && v != "v3" {
					add(fmt.Sprintf("%s.signature_versions[%d]", p, j), "must be v1, v2 or v3, got %q", v)
				}
			}
		case CRMClose:
			if s.Secret != "" {
				if _, err := decodeHexKey(s.Secret); err != nil {
					add(p+".secret", "must be Close's signature_key, hex-encoded")
				}
			}
		case CRMPipedrive:
			if s.Username == "" {
				add(p+".username", "required for pipedrive (the webhook's HTTP Basic user)")
			}
		case CRMSalesforce:
			needSecret = false
			if len(s.OrganizationIDs) == 0 {
				add(p+".organization_ids", "required for salesforce: the org ids whose outbound messages are accepted")
			}
			for j, id := range s.OrganizationIDs {
				if !sfID.MatchString(id) {
					add(fmt.Sprintf("%s.organization_ids[%d]", p, j), "must be a 15- or 18-character Salesforce id, got %q", id)
				}
			}
		case CRMAttio, CRMCanonical:
		default:
			needSecret = false
			add(p+".crm", "must be one of %s, got %q", strings.Join(CRMs, ", "), s.CRM)
		}
		if needSecret && s.Secret == "" {
			add(p+".secret", "required for %s", s.CRM)
		}
		if s.CRM != CRMHubSpot && len(s.SignatureVersions) > 0 {
			add(p+".signature_versions", "only for hubspot")
		}
		if s.CRM != CRMHubSpot && s.PublicURL != "" {
			add(p+".public_url", "only for hubspot (the other schemes do not sign the URL)")
		}
	}
	return errs
}

var sfID = regexp.MustCompile(`^[A-Za-z0-9]{15}([A-Za-z0-9]{3})?$`)

// ByteSize is a size in bytes written as 1048576, "1MiB", "512KiB", "1MB" or "2GiB".
type ByteSize int64

var byteSize = regexp.MustCompile(`^(\d+)\s*([KMG]i?B|B)?$`)

// UnmarshalYAML reads an integer or a size with a unit.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*b = v
	return nil
}

// ParseByteSize parses "1MiB" and the like (KiB, MiB, GiB are powers of 1024; KB, MB,
// GB of 1000).
func ParseByteSize(s string) (ByteSize, error) {
	m := byteSize.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, fmt.Errorf("%q is not a size: want bytes or a number with KiB, MiB, GiB, KB, MB or GB", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size: %w", s, err)
	}
	mult := map[string]int64{"": 1, "B": 1, "KB": 1000, "MB": 1000 * 1000, "GB": 1000 * 1000 * 1000,
		"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[m[2]]
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return ByteSize(n * mult), nil
}

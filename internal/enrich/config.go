package enrich

import (
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"
)

// Kinds of CRM connection.
const (
	KindHubSpot    = "hubspot"
	KindPipedrive  = "pipedrive"
	KindClose      = "close"
	KindSalesforce = "salesforce"
	KindAttio      = "attio"
)

// Kinds lists the connection kinds this package can fetch from.
var Kinds = []string{KindHubSpot, KindPipedrive, KindClose, KindSalesforce, KindAttio}

// Connection is one CRM account under `crms.connections.<name>`.
//
//	crms:
//	  connections:
//	    hubspot-main:
//	      kind: hubspot
//	      token: ${HUBSPOT_TOKEN}
//	      rate_limit: 9       # requests per second
//	      cache_ttl: 24h
type Connection struct {
	Kind string `yaml:"kind"` // hubspot | pipedrive | close | salesforce | attio
	// Source is the stage-change source this connection enriches (default: the kind, which
	// is what the native decoders report). One connection per source.
	Source string `yaml:"source"`
	// Token is the HubSpot private-app (or OAuth access) token, the Pipedrive API token,
	// the Close API key, the Attio access token, or a fixed Salesforce access token (no
	// refresh). Give it as ${ENV_VAR}; it is never logged.
	Token string `yaml:"token"`
	// Salesforce OAuth (refresh-token flow): the connected app's client id and secret and
	// a refresh token; TokenURL defaults to https://login.salesforce.com/services/oauth2/token
	// (https://test.salesforce.com/... for a sandbox org). Either these or Token.
	ClientID     string `yaml:"client_id"`
	ClientSecret string `yaml:"client_secret"`
	RefreshToken string `yaml:"refresh_token"`
	TokenURL     string `yaml:"token_url"`
	// APIVersion is the Salesforce REST API version (default v62.0).
	APIVersion string `yaml:"api_version"`
	// BaseURL defaults to the CRM's public API (https://api.hubapi.com,
	// https://api.pipedrive.com, https://api.close.com, https://api.attio.com); the sandbox
	// or a proxy overrides it. Salesforce has none: give the org's instance URL
	// (https://MyDomainName.my.salesforce.com).
	BaseURL string `yaml:"base_url"`
	// RateLimit is the most requests per second closedloop sends; Burst how many at once.
	RateLimit float64 `yaml:"rate_limit"`
	Burst     int     `yaml:"burst"`
	// CacheTTL is how long a fetched deal or contact counts as fresh.
	CacheTTL time.Duration `yaml:"cache_ttl"`
	// Timeout bounds one request.
	Timeout time.Duration `yaml:"timeout"`
}

// Config is the `crms:` section.
type Config struct {
	Connections map[string]Connection `yaml:"connections"`
	// Batch is the most rows one claim takes (HubSpot batch reads carry up to 100 ids).
	Batch        int           `yaml:"batch"`
	LeaseFor     time.Duration `yaml:"lease_for"`
	PollInterval time.Duration `yaml:"poll_interval"`
	// PauseFor is how long a connection rests after a 401/403 before it is probed again.
	PauseFor time.Duration `yaml:"pause_for"`
	// MaxBackoff caps the wait between retries of a row after 429/5xx.
	MaxBackoff time.Duration `yaml:"max_backoff"`
}

// DefaultConfig is the `crms:` section's defaults: no connections, so nothing is enriched.
func DefaultConfig() Config {
	return Config{Batch: 100, LeaseFor: time.Minute, PollInterval: time.Second, PauseFor: 5 * time.Minute, MaxBackoff: 10 * time.Minute}
}

var defaultBaseURLs = map[string]string{
	KindHubSpot:   "https://api.hubapi.com",
	KindPipedrive: "https://api.pipedrive.com",
	KindClose:     "https://api.close.com",
	KindAttio:     "https://api.attio.com",
}

// SalesforceTokenURL is the default Salesforce OAuth token endpoint.
const SalesforceTokenURL = "https://login.salesforce.com/services/oauth2/token"

// SalesforceAPIVersion is the default Salesforce REST API version.
const SalesforceAPIVersion = "v62.0"

// WithDefaults fills a connection's unset fields.
func (c Connection) WithDefaults() Connection {
	if c.Source == "" {
		c.Source = c.Kind
	}
	if c.BaseURL == "" {
		c.BaseURL = defaultBaseURLs[c.Kind]
	}
	if c.Kind == KindSalesforce {
		if c.TokenURL == "" {
			c.TokenURL = SalesforceTokenURL
		}
		if c.APIVersion == "" {
			c.APIVersion = SalesforceAPIVersion
		}
	}
	if c.RateLimit == 0 {
		switch c.Kind {
		case KindAttio:
			c.RateLimit = 50 // Attio allows 100 reads per second
		case KindSalesforce:
			c.RateLimit = 5 // the limit is a daily allocation per org, shared by every integration
		case KindHubSpot:
			c.RateLimit = 9 // HubSpot allows 100 or more per 10 s per account
		case KindPipedrive:
			c.RateLimit = 9 // Pipedrive's lowest plan allows 20 per 2 s per token
		default:
			c.RateLimit = 5
		}
	}
	if c.Burst == 0 {
		c.Burst = max(1, int(c.RateLimit))
	}
	if c.CacheTTL == 0 {
		c.CacheTTL = 24 * time.Hour
	}
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
	return c
}

// WithDefaults fills every connection's defaults.
func (c Config) WithDefaults() Config {
	for name, conn := range c.Connections {
		c.Connections[name] = conn.WithDefaults()
	}
	return c
}

// Names returns the connection names, sorted.
func (c Config) Names() []string {
	names := make([]string, 0, len(c.Connections))
	for n := range c.Connections {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Validate reports every problem, each naming its YAML path under prefix ("crms"). Tokens
// are never echoed.
func (c Config) Validate(prefix string) []error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", prefix, path, fmt.Sprintf(format, args...)))
	}
	if c.Batch < 1 || c.Batch > 1000 {
		bad("batch", "must be between 1 and 1000 rows, got %d", c.Batch)
	}
	if c.LeaseFor < time.Second {
		bad("lease_for", "must be at least 1s, got %s", c.LeaseFor)
	}
	if c.PollInterval <= 0 {
		bad("poll_interval", "must be positive")
	}
	if c.PauseFor < time.Second {
		bad("pause_for", "must be at least 1s, got %s", c.PauseFor)
	}
	if c.MaxBackoff < time.Second {
		bad("max_backoff", "must be at least 1s, got %s", c.MaxBackoff)
	}
	sources := map[string]string{}
	for _, name := range c.Names() {
		conn := c.Connections[name]
		p := "connections." + name
		known := false
		for _, k := range Kinds {
			known = known || conn.Kind == k
		}
		if !known {
			bad(p+".kind", "must be one of %s, got %q", strings.Join(Kinds, ", "), conn.Kind)
		}
		switch {
		case conn.Kind == KindSalesforce && conn.Token == "":
			if conn.ClientID == "" || conn.RefreshToken == "" {
				bad(p+".refresh_token", "salesforce needs client_id, client_secret and refresh_token (or a fixed token), as ${ENV_VAR}")
			}
			if u, err := url.Parse(conn.TokenURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				bad(p+".token_url", "must be an http(s) URL, got %q", conn.TokenURL)
			}
		case conn.Token == "":
			bad(p+".token", "required (give it as ${ENV_VAR})")
		}
		if conn.Kind == KindSalesforce && !strings.HasPrefix(conn.APIVersion, "v") {
			bad(p+".api_version", "must look like v62.0, got %q", conn.APIVersion)
		}
		if u, err := url.Parse(conn.BaseURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad(p+".base_url", "must be an http(s) URL, got %q", conn.BaseURL)
		}
		if conn.RateLimit <= 0 {
			bad(p+".rate_limit", "must be positive (requests per second), got %v", conn.RateLimit)
		}
		if conn.Burst < 1 {
			bad(p+".burst", "must be at least 1, got %d", conn.Burst)
		}
		if conn.CacheTTL < time.Second {
			bad(p+".cache_ttl", "must be at least 1s, got %s", conn.CacheTTL)
		}
		if conn.Timeout < time.Millisecond {
			bad(p+".timeout", "must be positive, got %s", conn.Timeout)
		}
		if conn.Source == "" || strings.Contains(conn.Source, ":") {
			bad(p+".source", "must be a source name without ':', got %q", conn.Source)
		} else if other, dup := sources[conn.Source]; dup {
			bad(p+".source", "source %q is already enriched by connection %s", conn.Source, other)
		} else {
			sources[conn.Source] = name
		}
	}
	return errs
}

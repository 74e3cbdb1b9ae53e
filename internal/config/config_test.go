package config

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/uploader/google"
)

func exampleEnv(name string) (string, bool) {
	v := map[string]string{
		"CLOSEDLOOP_POSTGRES_DSN":    "postgres://closedloop@127.0.0.1:5432/closedloop",
		"GOOGLE_CLIENT_ID":           "client-id.apps.googleusercontent.com",
		"GOOGLE_CLIENT_SECRET":       "s3cret",
		"GOOGLE_REFRESH_TOKEN":       "1//refresh",
		"META_ACCESS_TOKEN":          "EAAB-token",
		"TIKTOK_EVENT_SOURCE_ID":     "7123456789012345678",
		"TIKTOK_ACCESS_TOKEN":        "tt-token",
		"MICROSOFT_DEVELOPER_TOKEN":  "ms-dev-token",
		"MICROSOFT_CLIENT_ID":        "ms-client",
		"MICROSOFT_REFRESH_TOKEN":    "ms-refresh",
		"LINKEDIN_ACCESS_TOKEN":      "li-token",
		"HUBSPOT_CLIENT_SECRET":      "hs-secret",
		"PIPEDRIVE_WEBHOOK_PASSWORD": "pd-password",
		"CLOSE_SIGNATURE_KEY":        "00112233445566778899aabbccddeeff",
		"ATTIO_WEBHOOK_SECRET":       "attio-secret",
		"RELAY_SIGNING_SECRET":       "relay-secret",
	}[name]
	return v, v != ""
}

func examplePath(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "config.example.yaml")
}

func TestExampleLoadsAndValidates(t *testing.T) {
	t.Parallel()
	cfg, err := Load(examplePath(t), exampleEnv)
	require.NoError(t, err)
	require.Equal(t, "postgres", cfg.Store.Driver)
	require.Equal(t, "postgres://closedloop@127.0.0.1:5432/closedloop", cfg.Store.DSN)
	require.Equal(t, "s3cret", cfg.Destinations["google-main"].Settings.(*google.Settings).ClientSecret)
	require.Len(t, cfg.Destinations, 6)
	require.Len(t, cfg.Mappings, 2)
	require.Equal(t, 30*time.Second, cfg.Uploader.StatusPollInterval)
	require.Equal(t, 1000, cfg.Uploader.StatusPollLimit)
	m, err := cfg.CompileMappings()
	require.NoError(t, err)
	require.NotEmpty(t, m.Version())
	require.Len(t, cfg.Ingest.Sources, 6)
	require.Equal(t, int64(1<<20), int64(cfg.Ingest.MaxBody))
	require.Equal(t, "/webhooks/hubspot-prod", cfg.Ingest.Sources[0].Path)
	require.Equal(t, "crm.stage-changes", cfg.Ingest.Sources[1].Topic, "defaults to the first stage topic")
}

func TestIngestValidationNamesTheField(t *testing.T) {
	t.Parallel()
	_, err := Parse([]byte(`
kafka: {brokers: ["127.0.0.1:9092"]}
store: {driver: sqlite, path: /tmp/x.db}
ingest:
  max_body: 12 parsecs
`), exampleEnv)
	require.ErrorContains(t, err, "is not a size")
	_, err = Parse([]byte(`
kafka: {brokers: ["127.0.0.1:9092"]}
store: {driver: sqlite, path: /tmp/x.db}
ingest:
  listen: 127.0.0.1:8088
  sources:
    - {name: hs, crm: hubspot, secret: x}
    - {name: hs, crm: zoho}
    - {name: sf, crm: salesforce}
    - {name: pd, crm: pipedrive, secret: p}
    - {name: cl, crm: close, secret: not-hex}
    - {name: at, crm: attio, secret: s, bogus: 1}
`), exampleEnv)
	require.ErrorContains(t, err, "ingest.sources[5].bogus: unknown key")
	_, err = Parse([]byte(`
kafka: {brokers: ["127.0.0.1:9092"]}
store: {driver: sqlite, path: /tmp/x.db}
ingest:
  listen: 127.0.0.1:8088
  sources:
    - {name: hs, crm: hubspot, secret: x}
    - {name: hs, crm: zoho}
    - {name: sf, crm: salesforce}
    - {name: pd, crm: pipedrive, secret: p}
    - {name: cl, crm: close, secret: not-hex}
`), exampleEnv)
	for _, want := range []string{
		"ingest.sources[0].public_url: required for hubspot",
		`ingest.sources[1].name: "hs" is already the name of sources[0]`,
		`ingest.sources[1].crm: must be one of`,
		"ingest.sources[2].organization_ids: required for salesforce",
		"ingest.sources[3].username: required for pipedrive",
		"ingest.sources[4].secret: must be Close's signature_key, hex-encoded",
	} {
		require.ErrorContains(t, err, want)
	}
	require.NotContains(t, err.Error(), "not-hex", "a secret is never echoed")
}

func TestExampleNeedsItsSecretsFromTheEnvironment(t *testing.T) {
	t.Parallel()
	_, err := Load(examplePath(t), func(string) (string, bool) { return "", false })
	require.ErrorContains(t, err, "destinations.meta-crm.access_token: environment variable META_ACCESS_TOKEN is not set")
	require.ErrorContains(t, err, "store.dsn: environment variable CLOSEDLOOP_POSTGRES_DSN is not set")
}

func TestUnknownKeyIsAnError(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(examplePath(t))
	require.NoError(t, err)
	typo := strings.Replace(string(raw), "    retract_on:", "    retract_onn:", 1)
	require.NotEqual(t, string(raw), typo)
	_, err = Parse([]byte(typo), exampleEnv)
	require.ErrorContains(t, err, "mappings[1].retract_onn: unknown key (line ")
}

func TestValidateReportsEveryProblemWithItsPath(t *testing.T) {
	t.Parallel()
	_, err := Parse([]byte(`
log: {level: loud}
pii: {default_region: usa}
kafka: {brokers: []}
store: {driver: postgres}
uploader: {status_poll_interval: 10ms, status_poll_limit: 0}
destinations:
  g: {platform: google, customer_id: "123-456"}
`), exampleEnv)
	require.Error(t, err)
	for _, want := range []string{
		`log.level: must be debug, info, warn or error, got "loud"`,
		`uploader.status_poll_interval: must be at least 1s, got 10ms`,
		`uploader.status_poll_limit: must be between 1 and 100000 rows, got 0`,
		`pii.default_region`,
		`kafka.brokers`,
		`store.dsn`,
		`destinations.g.customer_id: must be 10 digits, got "123-456"`,
	} {
		require.ErrorContains(t, err, want)
	}
}

func TestEmptyFileIsDefaultsAndFailsOnlyOnWhatIsRequired(t *testing.T) {
	t.Parallel()
	_, err := Parse(nil, exampleEnv)
	require.ErrorContains(t, err, "kafka.brokers")
	require.NotContains(t, err.Error(), "log.level")
}

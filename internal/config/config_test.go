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
		"CLOSEDLOOP_POSTGRES_DSN": "postgres://closedloop@127.0.0.1:5432/closedloop",
		"GOOGLE_CLIENT_ID":        "client-id.apps.googleusercontent.com",
		"GOOGLE_CLIENT_SECRET":    "s3cret",
		"GOOGLE_REFRESH_TOKEN":    "1//refresh",
		"META_ACCESS_TOKEN":       "EAAB-token",
		"TIKTOK_EVENT_SOURCE_ID":  "7123456789012345678",
		"TIKTOK_ACCESS_TOKEN":     "tt-token",
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
	require.Len(t, cfg.Destinations, 4)
	require.Len(t, cfg.Mappings, 2)
	require.Equal(t, 30*time.Second, cfg.Uploader.StatusPollInterval)
	require.Equal(t, 1000, cfg.Uploader.StatusPollLimit)
	m, err := cfg.CompileMappings()
	require.NoError(t, err)
	require.NotEmpty(t, m.Version())
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

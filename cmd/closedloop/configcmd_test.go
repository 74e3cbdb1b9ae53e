package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func exampleEnv(t *testing.T) {
	for k, v := range map[string]string{
		"CLOSEDLOOP_POSTGRES_DSN": "postgres://closedloop@127.0.0.1:5432/closedloop",
		"GOOGLE_CLIENT_ID":        "id", "GOOGLE_CLIENT_SECRET": "secret", "GOOGLE_REFRESH_TOKEN": "refresh",
		"META_ACCESS_TOKEN": "meta", "TIKTOK_EVENT_SOURCE_ID": "7123456789012345678", "TIKTOK_ACCESS_TOKEN": "tiktok",
		"MICROSOFT_DEVELOPER_TOKEN": "ms-dev", "MICROSOFT_CLIENT_ID": "ms-client", "MICROSOFT_REFRESH_TOKEN": "ms-refresh", "LINKEDIN_ACCESS_TOKEN": "li",
		"HUBSPOT_CLIENT_SECRET": "hs", "PIPEDRIVE_WEBHOOK_PASSWORD": "pd", "CLOSE_SIGNATURE_KEY": "00112233445566778899aabbccddeeff",
		"ATTIO_WEBHOOK_SECRET": "at", "RELAY_SIGNING_SECRET": "relay",
	} {
		t.Setenv(k, v)
	}
}

func runCLI(args ...string) (string, error) {
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestConfigCheckExample(t *testing.T) {
	exampleEnv(t)
	out, err := runCLI("config", "check", "--config", "../../config.example.yaml")
	require.NoError(t, err)
	require.Contains(t, out, "config.example.yaml: ok")
	require.Contains(t, out, "tiktok-crm (tiktok)")
	require.NotContains(t, out, "secret", "secrets are never printed")
}

func TestConfigCheckNamesATypoedKey(t *testing.T) {
	exampleEnv(t)
	raw, err := os.ReadFile("../../config.example.yaml")
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "typo.yaml")
	require.NoError(t, os.WriteFile(path, []byte(strings.Replace(string(raw), "  batch_wait:", "  batch_wiat:", 1)), 0o600))
	_, err = runCLI("config", "check", "--config", path)
	require.ErrorContains(t, err, "kafka.batch_wiat: unknown key (line ")
}

package enrich_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/internal/enrich"
)

func TestConfigValidateNamesYAMLPaths(t *testing.T) {
	t.Parallel()
	cfg := enrich.DefaultConfig()
	cfg.Connections = map[string]enrich.Connection{
		"hs":  {Kind: "hubspot", Token: "secret-token-value"},
		"hs2": {Kind: "hubspot", Token: "t"},
		"zz":  {Kind: "zoho", BaseURL: "ftp://x", RateLimit: -1},
	}
	err := errors.Join(cfg.WithDefaults().Validate("crms")...)
	require.ErrorContains(t, err, `crms.connections.hs2.source: source "hubspot" is already enriched by connection hs`)
	require.ErrorContains(t, err, `crms.connections.zz.kind: must be one of hubspot, pipedrive, close, salesforce, attio, got "zoho"`)
	require.ErrorContains(t, err, `crms.connections.zz.token: required`)
	require.ErrorContains(t, err, `crms.connections.zz.base_url: must be an http(s) URL`)
	require.ErrorContains(t, err, `crms.connections.zz.rate_limit: must be positive`)
	require.NotContains(t, err.Error(), "secret-token-value", "tokens are never echoed")

	ok := enrich.DefaultConfig()
	ok.Connections = map[string]enrich.Connection{"hs": {Kind: "hubspot", Token: "t"}}
	ok = ok.WithDefaults()
	require.Empty(t, ok.Validate("crms"))
	require.Equal(t, "https://api.hubapi.com", ok.Connections["hs"].BaseURL)
	require.True(t, ok.Enriches("hubspot"))
	require.False(t, ok.Enriches("pipedrive"))
}

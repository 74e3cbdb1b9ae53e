package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// updateGolden rewrites golden files under testdata: go test ./cmd/closedloop -update
var updateGolden = flag.Bool("update", false, "rewrite golden files under testdata")

// runMappings runs `closedloop mappings <args>` and returns stdout, stderr and the error.
func runMappings(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := newMappingsCmd()
	var stdout, stderr bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SetArgs(args)
	cmd.SilenceUsage = true
	cmd.SilenceErrors = true
	err := cmd.Execute()
	return stdout.String(), stderr.String(), err
}

func explainFixture(name string) string { return filepath.Join("testdata", "explain", name) }

func TestMappingsCheckPrintsSummary(t *testing.T) {
	t.Parallel()
	out, _, err := runMappings(t, "check", "--config", explainFixture("config.yaml"))
	require.NoError(t, err)
	require.Contains(t, out, "1 rule(s), version ")
	require.Contains(t, out, "mappings[0] closed-won\n")
	require.Contains(t, out, "  match:      object_type=deal and stage in [closedwon]\n")
	require.Contains(t, out, "  retract on: stage in [closedlost]\n")
	require.Contains(t, out, "  value:      amount x 0.3, currency from currency else USD\n")
	require.Contains(t, out, "  -> google-main (google): conversion action 987654321\n")
	require.Contains(t, out, "  -> meta-crm (meta): event \"Purchase\", value amount, currency from currency\n")
	require.Contains(t, out, "     ! retract_on has no effect on meta-crm: the Meta Conversions API has no retraction", "never silently")
}

func TestMappingsCheckReportsEveryError(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(explainFixture("config.yaml"))
	require.NoError(t, err)
	bad := strings.Replace(string(raw), "{destination: google-main,", "{destination: googel-main,", 1)
	bad = strings.Replace(bad, "multiplier: 0.3", "multiplier: -0.3", 1)
	path := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(path, []byte(bad), 0o600))

	out, _, err := runMappings(t, "check", "--config", path)
	require.Error(t, err)
	require.Empty(t, out)
	require.ErrorContains(t, err, `mappings[0] (closed-won): value.multiplier: must be greater than 0, got -0.3`)
	require.ErrorContains(t, err, `mappings[0] (closed-won): destinations[0].destination: unknown destination "googel-main" (configured: ads-legacy, google-main, meta-crm, tiktok-crm)`)
}

func TestMappingsExplainGolden(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
	}{
		// Joined to the contact's capture: every destination gets a request.
		{"won_joined", []string{"--payload", explainFixture("won.json"), "--identities", explainFixture("identities.jsonl"), "--now", "2026-10-15T08:00:00Z"}},
		// Nothing to match on: every row would wait for an identity.
		{"won_no_identity", []string{"--payload", explainFixture("won.json"), "--now", "2026-10-15T08:00:00Z"}},
		// Months later: outside the platforms' windows.
		{"won_late", []string{"--payload", explainFixture("won.json"), "--identities", explainFixture("identities.jsonl"), "--now", "2027-06-01T00:00:00Z"}},
		// A click under 6 hours old: Google holds the row back for now.
		{"won_click_too_recent", []string{"--payload", explainFixture("won.json"), "--identities", explainFixture("identities_recent.jsonl"), "--now", "2026-10-14T14:00:00Z"}},
		// Closed-lost after closed-won: one retraction per destination.
		{"lost_retracts", []string{"--payload", explainFixture("lost.json"), "--identities", explainFixture("identities.jsonl"), "--now", "2026-10-22T08:00:00Z"}},
		// A HubSpot batch: no amount in a property change, so no value; the rename is ignored.
		{"hubspot_batch", []string{"--format", "hubspot", "--payload", explainFixture("hubspot.json"), "--identities", explainFixture("identities.jsonl"), "--now", "2026-10-15T08:00:00Z"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"explain", "--config", explainFixture("config.yaml")}, tt.args...)
			out, _, err := runMappings(t, args...)
			require.NoError(t, err)
			require.True(t, json.Valid([]byte(out)))
			for _, secret := range []string{"fake-client-secret", "fake-refresh-token", "fake-meta-token", "fake-tiktok-token", "fake-client-id"} {
				require.NotContains(t, out, secret, "explain must never print a credential")
			}
			for _, raw := range []string{"jane.doe", "example.com", "415"} {
				require.NotContains(t, out, raw, "explain must never print a raw identifier")
			}
			golden := explainFixture(tt.name + ".golden.json")
			if *updateGolden {
				require.NoError(t, os.WriteFile(golden, []byte(out), 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err)
			require.Equal(t, string(want), out)
		})
	}
}

func TestMappingsExplainShape(t *testing.T) {
	t.Parallel()
	out, _, err := runMappings(t, "explain", "--config", explainFixture("config.yaml"),
		"--payload", explainFixture("won.json"), "--identities", explainFixture("identities.jsonl"), "--now", "2026-10-15T08:00:00Z")
	require.NoError(t, err)
	var got struct {
		StageChanges []map[string]any `json:"stage_changes"`
		Conversions  []map[string]any `json:"conversions"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	require.Len(t, got.StageChanges, 1)
	require.Len(t, got.Conversions, 4)
	for _, c := range got.Conversions {
		for _, key := range []string{"rule", "destination", "platform", "key", "state", "reason", "value", "currency", "occurred_at"} {
			require.Contains(t, c, key)
		}
		if c["state"] == "ready" {
			req := c["request"].(map[string]any)
			require.Contains(t, req, "method")
			require.Contains(t, req, "url")
			require.Contains(t, req, "body")
		} else {
			require.NotContains(t, c, "request")
		}
	}
	require.Equal(t, 3750.0, got.Conversions[0]["value"], "amount x 0.3")
	require.Equal(t, 12500.0, got.Conversions[2]["value"], "meta's own value rule: the amount as is")
	require.Equal(t, "EUR", got.Conversions[0]["currency"])
}

func TestMappingsExplainUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad format", []string{"--format", "zoho", "--payload", explainFixture("won.json")}, `--format: must be one of canonical, hubspot, salesforce, pipedrive, close, attio, got "zoho"`},
		{"bad now", []string{"--now", "yesterday", "--payload", explainFixture("won.json")}, `--now: must be RFC 3339`},
		{"missing payload", []string{"--payload", explainFixture("nope.json")}, "--payload: open"},
		{"undecodable payload", []string{"--format", "hubspot", "--payload", explainFixture("config.yaml")}, "--payload: hubspot"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"explain", "--config", explainFixture("config.yaml")}, tt.args...)
			out, _, err := runMappings(t, args...)
			require.ErrorContains(t, err, tt.want)
			require.Empty(t, out)
		})
	}
}

func TestMappingsExplainBadIdentityLineNamesLineNotValue(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "ids.jsonl")
	require.NoError(t, os.WriteFile(path, []byte(
		`{"subject": {"type": "contact", "source": "hubspot", "id": "1"}, "captured_at": "2026-10-01T12:00:00Z", "email": "jane.doe@example.com"}`+"\n"+
			`{"subject": {"type": "contact", "source": "hubspot", "id": "2"}, "captured_at": "2026-10-01T12:00:00Z", "phone": "not-a-phone-jane"}`+"\n"), 0o600))
	_, _, err := runMappings(t, "explain", "--config", explainFixture("config.yaml"), "--payload", explainFixture("won.json"), "--identities", path)
	require.ErrorContains(t, err, "ids.jsonl line 2: phone")
	require.NotContains(t, err.Error(), "not-a-phone-jane")
}

package main

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestMappingsExplainLifecycle: won, restated (a new amount), lost, on all six
// destinations: every platform shows exactly the adjustment bodies the worker would send,
// and the adjustments it cannot make say so.
func TestMappingsExplainLifecycle(t *testing.T) {
	t.Parallel()
	args := []string{"explain", "--config", explainFixture("lifecycle.yaml"),
		"--payload", explainFixture("won.json"), "--payload", explainFixture("restated.json"), "--payload", explainFixture("restated.json"),
		"--payload", explainFixture("lost.json"), "--identities", explainFixture("identities_lifecycle.jsonl"), "--now", "2026-10-22T08:00:00Z"}
	out, _, err := runMappings(t, args...)
	require.NoError(t, err)
	for _, secret := range []string{"fake-client-secret", "fake-refresh-token", "fake-meta-token", "fake-tiktok-token", "fake-ms-developer-token", "fake-linkedin-token"} {
		require.NotContains(t, out, secret)
	}
	for _, raw := range []string{"jane.doe", "example.com", "415"} {
		require.NotContains(t, out, raw)
	}
	golden := explainFixture("lifecycle.golden.json")
	if *updateGolden {
		require.NoError(t, os.WriteFile(golden, []byte(out), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err)
	require.Equal(t, string(want), out)

	var got struct {
		Conversions []struct {
			Destination, Kind, State, Reason string
			Request                          *struct{ URL string }
		}
	}
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	type row struct{ dest, kind, state, reason string }
	var rows []row
	for _, c := range got.Conversions {
		if c.Kind == "" {
			continue
		}
		rows = append(rows, row{c.Destination, c.Kind, c.State, c.Reason})
		require.Equal(t, c.State == "ready", c.Request != nil, "%s %s: a request exactly when it would be sent", c.Destination, c.Kind)
	}
	// One restatement (the repeated amount makes none) and one retraction per destination.
	require.ElementsMatch(t, []row{
		{"google-main", "restatement", "ready", ""}, {"ads-legacy", "restatement", "ready", ""},
		{"meta-crm", "restatement", "skipped", "restatement_unsupported"}, {"tiktok-crm", "restatement", "skipped", "restatement_unsupported"},
		{"microsoft-crm", "restatement", "ready", ""}, {"linkedin-crm", "restatement", "skipped", "restatement_unsupported"},
		{"google-main", "retraction", "skipped", "retraction_unsupported"}, {"ads-legacy", "retraction", "ready", ""},
		{"meta-crm", "retraction", "skipped", "retraction_unsupported"}, {"tiktok-crm", "retraction", "skipped", "retraction_unsupported"},
		{"microsoft-crm", "retraction", "ready", ""}, {"linkedin-crm", "retraction", "skipped", "retraction_unsupported"},
	}, rows)
}

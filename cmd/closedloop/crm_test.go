package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/crm"
)

func runCRMDecode(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := newCRMCmd()
	var out, errOut bytes.Buffer
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(append([]string{"decode"}, args...))
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err = cmd.Execute()
	return out.String(), errOut.String(), err
}

func TestCRMDecodePrintsOneCanonicalChangePerLine(t *testing.T) {
	t.Parallel()
	stdout, stderr, err := runCRMDecode(t, "", "--format", "hubspot", "../../crm/testdata/hubspot/deal_stages.json")
	require.NoError(t, err)
	require.Equal(t, "ignored 3 event(s) that are not stage changes\n", stderr)
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	require.Len(t, lines, 5)
	var first crm.StageChange
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &first))
	require.Equal(t, "9001", first.ObjectID)
	require.Equal(t, crm.StatusWon, first.Status)
	require.Contains(t, lines[0], `"occurred_at":"2024-05-01T10:00:00Z"`)
	require.Contains(t, lines[0], `"object_id":"9001"`)
}

func TestCRMDecodeClose(t *testing.T) {
	t.Parallel()
	stdout, stderr, err := runCRMDecode(t, "", "--format", "close", "../../crm/testdata/close/documented_opportunity_won.json")
	require.NoError(t, err)
	require.Empty(t, stderr)
	var sc crm.StageChange
	require.NoError(t, json.Unmarshal([]byte(strings.TrimSpace(stdout)), &sc))
	require.Equal(t, "close", sc.Source)
	require.Equal(t, crm.StatusWon, sc.Status)
	require.Equal(t, "1000", sc.Amount.String(), "Close values are cents")
	require.Equal(t, "lead_kvgkBQdN9uFQFMSRsTXQiXsN1ZF2AXrpnHqIeRcIbEw", sc.Properties[crm.PropertyCRMLeadID])
}

func TestCRMDecodeAttioPrintsThinChanges(t *testing.T) {
	t.Parallel()
	stdout, stderr, err := runCRMDecode(t, "", "--format", "attio", "../../crm/testdata/attio/documented_list_entry_updated.json")
	require.NoError(t, err)
	require.Contains(t, stderr, "1 thin event(s)")
	var tc crm.ThinChange
	require.NoError(t, json.Unmarshal([]byte(strings.TrimSpace(stdout)), &tc))
	require.Equal(t, "attio", tc.Source)
	require.Equal(t, "2e6e29ea-c4e0-4f44-842d-78a891f8c156", tc.ObjectID, "a list entry is its own object")
	ref, ok := crm.ParseAttioRef(tc.FetchRef)
	require.True(t, ok)
	require.Equal(t, "entry", ref.Kind)
	require.Equal(t, "bf071e1f-6035-429d-b874-d83ea64ea13b", ref.Record, "the parent record is fetched for the value and people")
}

func TestCRMDecodeReadsStdinAndHashesIdentifiers(t *testing.T) {
	t.Parallel()
	in := `{"source":"relay","object_type":"lead","object_id":7,"stage":"sql","occurred_at":"2024-05-01T12:00:00+02:00","phone":"020 7946 0000"}`
	stdout, _, err := runCRMDecode(t, in, "--format", "canonical", "--region", "GB", "-")
	require.NoError(t, err)
	require.Contains(t, stdout, `"object_id":"7"`)
	require.Contains(t, stdout, `"occurred_at":"2024-05-01T10:00:00Z"`)
	require.Contains(t, stdout, `"phone/e164":`)
	require.NotContains(t, stdout, "7946")
}

func TestCRMDecodeFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		stdin    string
		args     []string
		code     int // 2 for usage errors, 1 otherwise
		contains string
	}{
		{"unknown format", "{}", []string{"--format", "zoho"}, 2, "--format"},
		{"bad region", "{}", []string{"--format", "canonical", "--region", "usa"}, 2, "--region"},
		{"malformed", "{", []string{"--format", "canonical"}, 1, "canonical: malformed JSON"},
		{"missing file", "", []string{"--format", "canonical", "does-not-exist.json"}, 1, "does-not-exist.json"},
		{"bad events", "", []string{"--format", "hubspot", "../../crm/testdata/hubspot/one_bad.json"}, 1, "3 event(s) could not be decoded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := runCRMDecode(t, tt.stdin, tt.args...)
			require.Error(t, err)
			require.Contains(t, err.Error(), tt.contains)
			var ex *exitError
			if tt.code == 2 {
				require.True(t, errors.As(err, &ex))
				require.Equal(t, 2, ex.code)
			} else {
				require.False(t, errors.As(err, &ex))
			}
		})
	}
}

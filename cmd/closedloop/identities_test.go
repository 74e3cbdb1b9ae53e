package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/internal/identity"
)

// runIdentities runs `closedloop identities <args>` and returns stdout and the error.
func runIdentities(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newIdentitiesCmd()
	var stdout, stderr bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SetArgs(args)
	cmd.SilenceUsage = true
	cmd.SilenceErrors = true
	err := cmd.Execute()
	return stdout.String(), err
}

func TestIdentitiesHash(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want map[string]hashResult
	}{
		{"google worked examples", []string{"--platform", "google", "email=cloudy.sanfrancisco+shopping@gmail.com", "phone=(800)555-0100"}, map[string]hashResult{
			"email": {"cloudysanfrancisco@gmail.com", "223ebda6f6889b1494551ba902d9d381daf2f642bae055888e96343d53e9f9c4"},
			"phone": {"+18005550100", "fb4f73a6ec5fdb7077d564cdd22c3554b43ce49168550c3b12c547b78c517b30"},
		}},
		{"meta worked examples", []string{"--platform", "meta", "phone=(650)555-1212", "country=United States", "date_of_birth=2/16/1997"}, map[string]hashResult{
			"phone":         {"16505551212", "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"},
			"country":       {"us", "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"},
			"date_of_birth": {"19970216", "01acdbf6ec7b4f478a225f1a246e5d6767eeab1a7ffa17f025265b5b94f40f0c"},
		}},
		{"google clear address parts", []string{"--platform", "google", "country=us", "city=New York"}, map[string]hashResult{
			"country": {"US", "9b202ecbc6d45c6d8901d989a918878397a3eb9d00e8f48022fc051b19d21a1d"},
			"city":    {"newyork", "350c754ba4d38897693aa077ef43072a859d23f613443133fecbbd90a3512ca5"},
		}},
		{"tiktok with region", []string{"--platform", "tiktok", "--region", "us", "phone=(+1)2133734253", "email="}, map[string]hashResult{
			"phone": {"+12133734253", "9f7ec22d72092cd3c0b58726ed9c2d91b92e51a3f29837508fb2948bb22dd2fd"},
			"email": {"", ""},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := runIdentities(t, append([]string{"hash"}, tt.args...)...)
			require.NoError(t, err)
			var got map[string]hashResult
			require.NoError(t, json.Unmarshal([]byte(out), &got))
			require.Equal(t, tt.want, got)
		})
	}
}

func TestIdentitiesHashErrors(t *testing.T) {
	t.Parallel()
	_, err := runIdentities(t, "hash", "--platform", "meta", "ssn=078-05-1120")
	require.ErrorContains(t, err, `unknown field "ssn"`)
	require.NotContains(t, err.Error(), "078-05-1120")
	var ex *exitError
	require.False(t, errors.As(err, &ex), "unknown field exits 1, not as a usage error")

	_, err = runIdentities(t, "hash", "--platform", "meta", "phone=555-12")
	require.EqualError(t, err, "phone: not a valid phone number for region US")

	_, err = runIdentities(t, "hash", "--platform", "linkedin", "phone=+16505551212")
	require.EqualError(t, err, "phone: linkedin takes no such identifier")
	require.False(t, errors.As(err, &ex))

	_, err = runIdentities(t, "hash", "--platform", "myspace", "email=a@b.co")
	require.True(t, errors.As(err, &ex))
	require.Equal(t, 2, ex.code)

	_, err = runIdentities(t, "hash", "--platform", "meta", "jane@example.com")
	require.EqualError(t, err, "argument 1: want FIELD=VALUE")
}

func TestIdentitiesImport(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("log: {level: warn}\nkafka: {brokers: [\"127.0.0.1:9092\"]}\nstore: {driver: sqlite, path: "+filepath.Join(dir, "c.db")+"}\n"), 0o600))
	file := filepath.Join("..", "..", "testdata", "identities", "captures.jsonl")

	out, err := runIdentities(t, "import", "--config", cfg, "--output", "json", file)
	require.EqualError(t, err, "3 of 8 captures rejected")
	var first identity.Summary
	require.NoError(t, json.Unmarshal([]byte(out), &first))
	require.Equal(t, 3, first.Imported)

	out, err = runIdentities(t, "import", "--config", cfg, file)
	require.Error(t, err)
	require.Contains(t, out, "read 8, imported 0, merged 0, unchanged 5, rejected 3\n  line 4: phone: not a valid phone number for region US\n")
}

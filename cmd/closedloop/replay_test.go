package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/internal/replay"
)

func runReplay(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := newReplayCmd()
	var stdout, stderr bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SetArgs(args)
	cmd.SilenceUsage = true
	cmd.SilenceErrors = true
	err := cmd.ExecuteContext(ctx)
	return stdout.String(), err
}

// replayConfig writes the replay tests' config with a SQLite store in a temp dir.
func replayConfig(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "..", "testdata", "replay", "config.yaml"))
	require.NoError(t, err)
	dir := t.TempDir()
	body := strings.Replace(string(src), "path: replay-test.db", "path: "+filepath.Join(dir, "c.db"), 1)
	body = "log: {level: warn}\n" + body
	path := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
	return path
}

func TestReplayCmdFile(t *testing.T) {
	t.Parallel()
	cfg := replayConfig(t)
	export := filepath.Join("..", "..", "testdata", "replay", "deals.csv")

	_, err := runReplay(t, "--config", cfg, "--file", export, "--dry-run")
	require.ErrorContains(t, err, "a dry run does not create it", "a dry run never creates the store")

	out, err := runReplay(t, "--config", cfg, "--file", export, "--json")
	require.ErrorContains(t, err, "5 records had errors", "skipped records make the exit code non-zero")
	var first replay.Summary
	require.NoError(t, json.Unmarshal([]byte(out), &first))
	require.Equal(t, 10, first.Conversions.New)
	require.Len(t, first.Errors, 5)

	out, err = runReplay(t, "--config", cfg, "--file", export, "--dry-run")
	require.Error(t, err)
	require.Contains(t, out, "Dry run of")
	require.Contains(t, out, "new 0 (awaiting identity 0), already existing 10 (skipped by key)")

	out, err = runReplay(t, "--config", cfg, "--file", export, "--json", "--destination", "meta-crm")
	require.Error(t, err)
	var again replay.Summary
	require.NoError(t, json.Unmarshal([]byte(out), &again))
	require.Equal(t, replay.Counts{Planned: 5, Existing: 5}, again.Conversions)
}

func TestReplayCmdUsage(t *testing.T) {
	t.Parallel()
	cfg := replayConfig(t)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"nothing to replay", []string{"--config", cfg}, "give --from"},
		{"bad time", []string{"--config", cfg, "--from", "last tuesday"}, "--from: must be an RFC 3339 time"},
		{"backwards", []string{"--config", cfg, "--from", "2024-05-02", "--to", "2024-05-01"}, "--from must be before --to"},
		{"topic with file", []string{"--config", cfg, "--file", "x.csv", "--topic", "t"}, "--topic applies to a Kafka replay"},
		{"format without file", []string{"--config", cfg, "--from", "2024-05-01", "--format", "csv"}, "--format applies to --file"},
		{"unknown format", []string{"--config", cfg, "--file", "x.csv", "--format", "xml"}, `--format "xml"`},
		{"unknown destination", []string{"--config", cfg, "--from", "2024-05-01", "--destination", "bing"}, `--destination "bing" is not configured`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runReplay(t, tc.args...)
			require.ErrorContains(t, err, tc.want)
			var ex *exitError
			require.True(t, errors.As(err, &ex), "a usage error")
			require.Equal(t, 2, ex.code)
		})
	}
}

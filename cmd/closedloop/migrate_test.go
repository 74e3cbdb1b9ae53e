package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func runMigrate(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newMigrateCmd()
	var stdout, stderr bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SetArgs(args)
	cmd.SilenceUsage = true
	cmd.SilenceErrors = true
	err := cmd.Execute()
	return stdout.String(), err
}

func TestMigrateUpStatusDown(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("log: {level: warn}\nkafka: {brokers: [\"127.0.0.1:9092\"]}\nstore: {driver: sqlite, path: "+
		filepath.Join(dir, "c.db")+", migrate_on_start: false}\n"), 0o600))

	for _, step := range []struct{ arg, want string }{
		{"status", "sqlite schema version 0 (clean)\n"},
		{"up", "sqlite schema version 5 (clean)\n"},
		{"up", "sqlite schema version 5 (clean)\n"},
		{"status", "sqlite schema version 5 (clean)\n"},
		{"down", "sqlite schema version 0 (clean)\n"},
	} {
		out, err := runMigrate(t, step.arg, "--config", cfg)
		require.NoError(t, err, step.arg)
		require.Equal(t, step.want, out, step.arg)
	}
	_, err := runMigrate(t, "sideways", "--config", cfg)
	require.Error(t, err)
	_, err = runMigrate(t, "up")
	require.Error(t, err, "--config is required")
}

package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/migrations"
)

// latestSQLiteVersion is the number of the newest embedded SQLite migration.
func latestSQLiteVersion(t *testing.T) int {
	t.Helper()
	files, err := fs.Glob(migrations.SQLite, "sqlite/*.up.sql")
	require.NoError(t, err)
	latest := 0
	for _, f := range files {
		n, err := strconv.Atoi(strings.SplitN(filepath.Base(f), "_", 2)[0])
		require.NoError(t, err, f)
		latest = max(latest, n)
	}
	require.Positive(t, latest)
	return latest
}

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

	latest := fmt.Sprintf("sqlite schema version %d (clean)\n", latestSQLiteVersion(t))
	for _, step := range []struct{ arg, want string }{
		{"status", "sqlite schema version 0 (clean)\n"},
		{"up", latest},
		{"up", latest},
		{"status", latest},
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

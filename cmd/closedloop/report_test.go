package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func requireExit2(t *testing.T, err error, want string) {
	t.Helper()
	var ex *exitError
	require.True(t, errors.As(err, &ex), "want an exit-2 usage error, got %v", err)
	require.Equal(t, 2, ex.code)
	require.ErrorContains(t, err, want)
}

func TestReportBadInputExitsTwo(t *testing.T) {
	dir := t.TempDir()
	noStore := filepath.Join(dir, "nostore.yaml")
	require.NoError(t, os.WriteFile(noStore, []byte("kafka: {brokers: [\"127.0.0.1:9092\"]}\n"), 0o600))
	missingDB := filepath.Join(dir, "missing.yaml")
	require.NoError(t, os.WriteFile(missingDB, []byte("kafka: {brokers: [\"127.0.0.1:9092\"]}\nstore: {driver: sqlite, path: "+filepath.Join(dir, "none.db")+"}\n"), 0o600))

	_, err := runCLI("report", "--config", noStore, "--format", "xml")
	requireExit2(t, err, `--format: "xml" is not one of table, json, csv`)
	_, err = runCLI("report", "--config", noStore, "--since", "yesterday")
	requireExit2(t, err, `--since: "yesterday"`)
	_, err = runCLI("report", "--config", noStore)
	requireExit2(t, err, "store: no store section")
	_, err = runCLI("report", "--config", missingDB)
	requireExit2(t, err, "store.path: no SQLite database")
	_, err = os.Stat(filepath.Join(dir, "none.db"))
	require.True(t, os.IsNotExist(err), "the report never creates a database")
}

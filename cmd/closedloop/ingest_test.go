package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestIngestNeedsSources(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	require.NoError(t, os.WriteFile(path, []byte("kafka: {brokers: [\"127.0.0.1:9092\"]}\nstore: {driver: sqlite, path: x.db}\n"), 0o600))
	_, err := runCLI("ingest", "--config", path)
	var ex *exitError
	require.True(t, errors.As(err, &ex), "%v", err)
	require.Equal(t, 2, ex.code)
	require.ErrorContains(t, err, "no ingest.sources")
	_, err = runCLI("ingest")
	require.ErrorContains(t, err, "--config is required")
}

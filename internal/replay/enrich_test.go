package replay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/internal/config"
	"github.com/closedloop/closedloop/internal/replay"
	"github.com/closedloop/closedloop/store"
)

// A replayed thin HubSpot deal webhook (no amount, no contacts) of a source a CRM
// connection enriches waits for enrichment, as it does when consumed: never a valueless
// ready row.
func TestFileThinWebhookAwaitsEnrichment(t *testing.T) {
	t.Parallel()
	base, err := os.ReadFile(testdata("config.yaml"))
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "config.yaml")
	cfgText := string(base) + "\ncrms:\n  connections:\n    hubspot-main: {kind: hubspot, token: t0ken, base_url: \"http://127.0.0.1:9\"}\n"
	require.NoError(t, os.WriteFile(path, []byte(cfgText), 0o600))
	cfg, err := config.Load(path, func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	st, _ := openSQLite(t)
	r, err := replay.NewFromConfig(cfg, st, zaptest.NewLogger(t))
	require.NoError(t, err)

	src, err := os.ReadFile(filepath.Join("..", "..", "crm", "testdata", "hubspot", "deal_stages.json"))
	require.NoError(t, err)
	var compact bytes.Buffer
	require.NoError(t, json.Compact(&compact, src))
	file := filepath.Join(t.TempDir(), "hubspot.jsonl")
	require.NoError(t, os.WriteFile(file, append(compact.Bytes(), '\n'), 0o644))
	_, err = r.File(context.Background(), replay.FileOptions{Path: file, Format: "hubspot"})
	require.NoError(t, err)

	rows, err := st.ListConversions(context.Background(), store.ListFilter{})
	require.NoError(t, err)
	require.NotEmpty(t, rows)
	for _, c := range rows {
		require.Equal(t, "9001", c.ObjectID, "only deal 9001 reached closedwon")
		require.Equal(t, store.StateAwaitingEnrichment, c.State, "%s: %s %s", c.Destination, c.Reason, c.Detail)
		require.Nil(t, c.Value)
	}
}

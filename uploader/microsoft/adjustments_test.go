package microsoft_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader/microsoft"
	"github.com/closedloop/closedloop/uploader/sandbox/schema"
)

// adjustments: a restatement and a retraction of the first of rows, which was accepted.
func adjustments(t *testing.T) []store.Conversion {
	orig := rows(t)[0]
	orig.State = store.StateAccepted
	return []store.Conversion{
		{Key: "k-deal-1-restate", Kind: store.KindRestatement, RetractsKey: orig.Key, ConversionName: "Closed Won",
			OccurredAt: time.Date(2026, 10, 19, 8, 0, 0, 0, time.UTC), Value: value(9000), Currency: "EUR", Adjusted: &orig},
		{Key: "k-deal-1-retract", Kind: store.KindRetraction, RetractsKey: orig.Key, ConversionName: "Closed Won",
			OccurredAt: time.Date(2026, 10, 20, 8, 0, 0, 0, time.UTC), Adjusted: &orig},
	}
}

func TestAdjustmentsBody(t *testing.T) {
	t.Parallel()
	p := microsoft.New(config("http://x"), nil, zaptest.NewLogger(t))
	adj := adjustments(t)
	for i := range adj {
		require.Nil(t, p.Check(&adj[i], now), adj[i].Key)
		require.Equal(t, "adjustment", p.BatchGroup(&adj[i]))
	}
	body, err := p.Body(adj)
	require.NoError(t, err)
	golden := filepath.Join("testdata", "offline_conversion_adjustments_apply.json")
	if *update {
		var b bytes.Buffer
		require.NoError(t, json.Indent(&b, body, "", "  "))
		require.NoError(t, os.WriteFile(golden, append(b.Bytes(), '\n'), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err)
	require.JSONEq(t, string(want), string(body))
	require.Empty(t, schema.MustLoad(schema.Microsoft).ValidateJSON("ApplyOfflineConversionAdjustmentsRequest", body))

	_, err = p.Body(append(adj, rows(t)[0]))
	require.ErrorContains(t, err, "mixes conversions and adjustments")
	noOrig := adj[:1:1]
	noOrig[0].Adjusted = nil
	_, err = p.Body(noOrig)
	require.ErrorContains(t, err, "no Adjusted conversion")
}

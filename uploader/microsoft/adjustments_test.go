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
	"github.com/closedloop/closedloop/uploader"
	"github.com/closedloop/closedloop/uploader/microsoft"
	"github.com/closedloop/closedloop/uploader/sandbox"
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

// TestAdjustmentsRoundTrip: against the sandbox a restatement and a retraction of an
// accepted conversion apply once each; resent, they are ignored duplicates.
func TestAdjustmentsRoundTrip(t *testing.T) {
	t.Parallel()
	h := setup(t, sandbox.Options{})
	res, err := send(t, h.p, rows(t)[:1])
	require.NoError(t, err)
	require.Equal(t, uploader.ClassAccepted, res[0].Class)
	for range 2 {
		res, err = send(t, h.p, adjustments(t))
		require.NoError(t, err)
		require.Equal(t, []uploader.Class{uploader.ClassAccepted, uploader.ClassAccepted}, []uploader.Class{res[0].Class, res[1].Class}, "%+v", res)
	}
	c := h.sb.Counts()[microsoft.Name]
	require.Equal(t, 1, c.AcceptedUnique)
	require.Equal(t, 1, c.Restated)
	require.Equal(t, 1, c.Retracted)
	require.Equal(t, 2, c.AdjustmentDuplicates)

	unknown := adjustments(t)[:1]
	unknown[0].Adjusted.OccurredAt = unknown[0].Adjusted.OccurredAt.Add(time.Minute)
	res, err = send(t, h.p, unknown)
	require.NoError(t, err)
	require.Equal(t, uploader.ClassUnknown, res[0].Class, "an unconfirmed error code is retried, never rejected")
}

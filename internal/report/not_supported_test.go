package report

import (
	"bytes"
	"context"
	"encoding/csv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/store"
)

// TestNotSupportedAdjustments: adjustments a platform cannot make are counted apart, per
// destination, in every format; other skips are not.
func TestNotSupportedAdjustments(t *testing.T) {
	t.Parallel()
	src := counts{conv: []store.ReportCount{
		rc(day1, "meta-crm", "Purchase", "won", store.StateAccepted, "uploaded", true, 3),
		rc(day1, "meta-crm", "Purchase", "won", store.StateSkipped, store.ReasonRetractionUnsupported, false, 2),
		rc(day1, "meta-crm", "Purchase", "won", store.StateSkipped, store.ReasonRestatementUnsupported, false, 1),
		rc(day1, "meta-crm", "Purchase", "won", store.StateSkipped, "consent_denied", true, 4),
		rc(day1, "ads", "1", "won", store.StateAccepted, "uploaded", true, 2),
	}}
	rep, err := Build(context.Background(), src, Options{Since: day1, Until: day2})
	require.NoError(t, err)
	require.Len(t, rep.Conversions, 2)
	ads, meta := rep.Conversions[0], rep.Conversions[1]
	require.Equal(t, 0, ads.Total.NotSupported)
	require.Equal(t, 7, meta.Total.Skipped)
	require.Equal(t, 3, meta.Total.NotSupported)
	require.Equal(t, map[string]int{store.ReasonRetractionUnsupported: 2, store.ReasonRestatementUnsupported: 1}, meta.Total.NotSupportedBy)

	var table bytes.Buffer
	require.NoError(t, Render(&table, rep, "table"))
	require.Contains(t, table.String(), "not supported 3 adjustments the platform cannot make, kept skipped: retraction_unsupported 2, restatement_unsupported 1")
	var js bytes.Buffer
	require.NoError(t, Render(&js, rep, "json"))
	require.Contains(t, js.String(), `"not_supported": 3`)
	var cs bytes.Buffer
	require.NoError(t, Render(&cs, rep, "csv"))
	recs, err := csv.NewReader(&cs).ReadAll()
	require.NoError(t, err)
	col := len(recs[0]) - 1
	require.Equal(t, "not_supported", recs[0][col])
	require.Equal(t, "3", recs[len(recs)-1][col], "meta-crm's total line")
}
